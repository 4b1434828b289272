//! The daemon: state, router, background tasks, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use kiln_plugin_api::{RenderExporter, Storage};
use kiln_storage_sled::SledStorage;

use crate::config::Config;
use crate::ingest::{self, Decoders};
use crate::metrics::Metrics;
use crate::pipeline::Pipelines;
use crate::query;

pub struct AppState {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    pub pipelines: ArcSwap<Pipelines>,
    pub decoders: Decoders,
    pub renderers: BTreeMap<String, Arc<dyn RenderExporter>>,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let sled = SledStorage::open(&config.sled_config())
            .with_context(|| format!("opening storage at {}", config.storage.path.display()))?;
        let storage: Arc<dyn Storage> = Arc::new(sled);
        let mut decoders = Decoders::builtin(config.server.max_decompressed_bytes);
        let mut plugins = Vec::new();
        for (file, loaded) in crate::plugins::scan(&config.server.plugins_dir) {
            match loaded {
                Ok(lib) => {
                    tracing::info!(plugin = %lib.name, kind = %lib.kind, version = %lib.version, file = %file.display(), "plugin loaded");
                    if lib.kind == kiln_plugin_api::ComponentKind::Decoder {
                        let decoder = lib
                            .instantiate("{}")
                            .with_context(|| format!("starting decoder plugin {}", lib.name))?;
                        decoders.insert(&lib.name, decoder);
                    }
                    plugins.push(lib);
                }
                Err(e) => tracing::error!(error = %e, "plugin refused"),
            }
        }
        let pipelines = Pipelines::build(&config, storage.clone(), &decoders.names(), &plugins)?;
        let mut renderers: BTreeMap<String, Arc<dyn RenderExporter>> = kiln_exporters::builtin()
            .into_iter()
            .map(|(name, r)| (name.to_string(), r))
            .collect();
        renderers.insert(
            "html".into(),
            Arc::new(crate::html_export::Html {
                max_nodes: config.server.max_nodes,
            }),
        );
        renderers.insert("pprof".into(), Arc::new(kiln_pprof::PprofRenderer));
        Ok(Arc::new(Self {
            decoders,
            config,
            storage,
            pipelines: ArcSwap::from_pointee(pipelines),
            renderers,
            metrics: Metrics::default(),
        }))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.server.max_body_bytes as usize;
    Router::new()
        .route("/ingest", post(ingest::ingest))
        .route("/pyroscope/ingest", post(ingest::ingest))
        .route("/push.v1.PusherService/Push", post(crate::connect::push))
        .route("/v1development/profiles", post(crate::otlp::export))
        .route("/render", get(query::render))
        .route("/render-diff", get(query::render_diff))
        .route("/labels", get(query::labels))
        .route("/label-values", get(query::label_values))
        .route("/api/apps", get(query::apps).delete(query::delete_app))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/", get(crate::ui::index))
        .route("/ui/{*path}", get(crate::ui::asset))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves until SIGINT/SIGTERM, then flushes storage.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let flush_interval = config.server.flush_interval;
    let self_profiling = config.server.self_profiling;
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "kiln listening");

    let flusher = tokio::spawn(flush_loop(state.clone(), flush_interval));
    let retention = tokio::spawn(retention_loop(state.clone()));
    let profiler = self_profiling.then(|| tokio::spawn(crate::selfprof::run(state.clone())));

    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;

    flusher.abort();
    retention.abort();
    if let Some(p) = profiler {
        p.abort();
    }
    state.storage.flush().await.context("final flush")?;
    tracing::info!("kiln stopped; data flushed");
    Ok(())
}

async fn flush_loop(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.storage.flush().await {
            tracing::error!(error = %e, "flush failed");
        }
    }
}

async fn retention_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match state.storage.enforce_retention(crate::time::now_ns()).await {
            Ok(r) if r.chunks_deleted > 0 => {
                tracing::info!(chunks = r.chunks_deleted, "retention pass")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention pass failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
