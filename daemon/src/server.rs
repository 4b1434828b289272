//! The daemon: state, router, background tasks, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use kiln_plugin_api::{ComponentKind, RenderExporter, Storage};
use kiln_storage_sled::SledStorage;

use crate::config::Config;
use crate::durable::{Durability, ReadAfterAck};
use crate::ingest::{self, Decoders};
use crate::metrics::Metrics;
use crate::pipeline::Pipelines;
use crate::plugins::Registry;
use crate::query;

/// The part of the daemon a reload rebuilds: plugins, decoders, pipelines and renderers.
pub struct Ingestion {
    pub decoders: Decoders,
    pub pipelines: Pipelines,
    /// `/render?format=NAME` exporters: built in, then render plugins.
    pub renderers: BTreeMap<String, Arc<dyn RenderExporter>>,
    /// `[metrics_rules]`, evaluated on every accepted profile.
    pub rules: Arc<crate::rules::RuleSet>,
}

impl Ingestion {
    /// Loads the plugins directory and builds decoders, pipelines and renderers from `config`.
    /// Errors name the configuration file, table and key.
    pub fn build(config: &Config, metrics: &Metrics) -> anyhow::Result<Self> {
        let plugins = Registry::load_dir(&config.server.plugins_dir, metrics.clone());
        Self::build_with(config, &plugins, metrics)
    }

    /// [`Ingestion::build`] from plugins already loaded.
    pub fn build_with(
        config: &Config,
        plugins: &Registry,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        Self::build_inner(config, plugins, metrics)
            .with_context(|| config.path.display().to_string())
    }

    fn build_inner(config: &Config, plugins: &Registry, metrics: &Metrics) -> anyhow::Result<Self> {
        for name in config.plugins.keys() {
            if !plugins
                .of_kind(ComponentKind::Decoder)
                .chain(plugins.of_kind(ComponentKind::Render))
                .any(|p| p.name() == name)
            {
                anyhow::bail!(
                    "in [plugins.{name}]: no decoder or render plugin named {name:?} in {}",
                    config.server.plugins_dir.display()
                );
            }
        }
        let settings = |name: &str| config.plugins.get(name).cloned().unwrap_or_default();

        let mut decoders = Decoders::builtin(config.server.max_decompressed_bytes);
        for plugin in plugins.of_kind(ComponentKind::Decoder) {
            let name = plugin.name();
            let table = format!("plugins.{name}");
            decoders.insert(name, plugins.decoder(plugin, &settings(name), &table)?);
        }
        let pipelines = Pipelines::build(config, &decoders.names(), plugins, metrics)?;

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
        for plugin in plugins.of_kind(ComponentKind::Render) {
            let name = plugin.name();
            if name == "json" || renderers.contains_key(name) {
                tracing::error!(plugin = %name, "render plugin skipped: the format {name:?} is built in");
                continue;
            }
            let table = format!("plugins.{name}");
            renderers.insert(
                name.to_string(),
                plugins.render(plugin, &settings(name), &table)?,
            );
        }
        // Rules unchanged by a reload keep counting where they were.
        let rules = Arc::new(crate::rules::RuleSet::compile(
            &config.metrics_rules,
            metrics.rules().as_deref(),
        )?);
        Ok(Self {
            decoders,
            pipelines,
            renderers,
            rules,
        })
    }
}

/// Where the configuration came from, so a reload reads it the same way.
pub type ConfigSource = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

pub struct AppState {
    pub config: Config,
    /// Auth settings and API keys (what the auth layer checks).
    pub auth: crate::auth::Auth,
    /// Storage as queries see it: reads wait for every acknowledged push.
    pub storage: Arc<dyn Storage>,
    /// The write-ahead log and the applier: every push goes through it.
    pub durable: Arc<Durability>,
    pub ingestion: ArcSwap<Ingestion>,
    config_source: Option<ConfigSource>,
    pub metrics: Metrics,
    pub limits: Arc<crate::limits::Limits>,
    /// HTTPS settings when `[tls]` names a certificate.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Pull mode: scrape jobs and targets.
    pub scrape: crate::scrape::Scraper,
}

impl AppState {
    pub fn new(config: Config, config_source: Option<ConfigSource>) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::default();
        let auth = crate::auth::Auth::open(
            config.auth.clone(),
            &config.server.listen,
            &config.storage.path,
        )?;
        if auth.config.enabled {
            crate::auth::users::bootstrap(&auth.users).context("creating the first admin user")?;
        }
        let tls = match config.tls.enabled() {
            true => Some(Arc::new(
                crate::tls::Tls::load(&config.tls)
                    .with_context(|| config.path.display().to_string())?,
            )),
            false => None,
        };
        let limits = Arc::new(crate::limits::Limits::new(&config.limits, metrics.clone()));
        let scrape = crate::scrape::Scraper::new(&config)?;
        let plugins = Registry::load_dir(&config.server.plugins_dir, metrics.clone());
        let storage = open_storage(&config, &plugins)?;
        let ingestion = Ingestion::build_with(&config, &plugins, &metrics)?;
        metrics.set_rules(ingestion.rules.clone());
        let durable = Durability::start(
            &config,
            storage,
            &ingestion,
            metrics.clone(),
            limits.clone(),
        )?;
        let storage = Arc::new(ReadAfterAck {
            durability: durable.clone(),
            timeout: config.wal.max_unapplied_age,
        });
        Ok(Arc::new(Self {
            config,
            auth,
            storage,
            durable,
            ingestion: ArcSwap::from_pointee(ingestion),
            config_source,
            metrics,
            limits,
            tls,
            scrape,
        }))
    }

    /// Re-reads the configuration and the plugins directory and swaps in new decoders,
    /// pipelines, renderers and per-tenant limits; requests in flight finish on the old ones.
    /// On any error nothing changes. Listen address, storage settings, `[tls]` file names and
    /// the per-daemon limits need a restart.
    ///
    /// The TLS certificate, key and client CAs are re-read from their files first, on their
    /// own: a certificate that does not load keeps the previous one serving (logged) while
    /// the rest of the configuration still reloads.
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(Err(e)) = self.tls.as_ref().map(|t| t.reload()) {
            tracing::error!(error = %e, "TLS certificate not reloaded; the previous one keeps serving");
        }
        let source = self.config_source.as_ref().ok_or_else(|| {
            anyhow::anyhow!("this daemon was not started from a configuration it can re-read")
        })?;
        let config = source()?;
        let ingestion = Ingestion::build(&config, &self.metrics)?;
        self.scrape.reload(&config)?;
        self.metrics.set_rules(ingestion.rules.clone());
        self.ingestion.store(Arc::new(ingestion));
        self.limits.reload(&config.limits);
        self.metrics.plugins_reloaded();
        tracing::info!("configuration and plugins reloaded");
        Ok(())
    }
}

/// The built-in sled storage, or the native storage plugin `[storage] type` names.
pub fn open_storage(config: &Config, plugins: &Registry) -> anyhow::Result<Arc<dyn Storage>> {
    if config.storage.kind == "sled" {
        let sled = SledStorage::open(&config.sled_config())
            .with_context(|| format!("opening storage at {}", config.storage.path.display()))?;
        return Ok(Arc::new(sled));
    }
    if config.storage.kind == "clickhouse" {
        // Built in: several daemons share it, so it is the scale-out path and ships with
        // every build rather than as a separate library to deploy next to each daemon.
        let levels = config.clickhouse_levels();
        if let Err(e) = config.sled_config().validate() {
            anyhow::bail!("{}: in [storage], key `{e}", config.path.display());
        }
        let ch = kiln_storage_clickhouse::ClickHouseStorage::open(
            &config.storage.clickhouse,
            levels,
            Some(&config.storage.path),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
        return Ok(Arc::new(ch));
    }
    let options = serde_json::to_string(&config.storage.options).expect("TOML serializes as JSON");
    plugins
        .storage(&config.storage.kind, &options)
        .with_context(|| config.path.display().to_string())
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.server.max_body_bytes as usize;
    // Reads: a slot of limits.max_concurrent_queries each, within limits.query_timeout.
    let q =
        axum::middleware::from_fn_with_state(state.limits.clone(), crate::limits::http::queries);
    Router::new()
        .route("/ingest", post(ingest::ingest))
        .route("/pyroscope/ingest", post(ingest::ingest))
        .route("/push.v1.PusherService/Push", post(crate::connect::push))
        .route("/v1development/profiles", post(crate::otlp::export))
        .route("/render", get(query::render).route_layer(q.clone()))
        .route(
            "/render-diff",
            get(query::render_diff).route_layer(q.clone()),
        )
        .route("/labels", get(query::labels).route_layer(q.clone()))
        .route(
            "/label-values",
            get(query::label_values).route_layer(q.clone()),
        )
        // The same reads where Grafana Pyroscope serves them (its Profiles Drilldown app and
        // tools written against it call these paths).
        .route(
            "/pyroscope/render",
            get(query::render).route_layer(q.clone()),
        )
        .route(
            "/pyroscope/render-diff",
            get(query::render_diff).route_layer(q.clone()),
        )
        .route(
            "/pyroscope/labels",
            get(query::labels).route_layer(q.clone()),
        )
        .route(
            "/pyroscope/label-values",
            get(query::label_values).route_layer(q.clone()),
        )
        .route(
            "/api/apps",
            get(query::apps).route_layer(q).delete(query::delete_app),
        )
        .route("/api/targets", get(crate::scrape::api_targets))
        .route("/api/storage", get(crate::storage_api::usage))
        // Grafana's Pyroscope data source (Connect querier API).
        .merge(crate::querier::routes(state.limits.clone()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
        .route(
            "/api/admin/apikeys",
            get(crate::auth::admin::list).post(crate::auth::admin::create),
        )
        .route(
            "/api/admin/apikeys/{id}",
            delete(crate::auth::admin::revoke),
        )
        .route(
            "/api/admin/users",
            get(crate::auth::admin::list_users).post(crate::auth::admin::add_user),
        )
        .route(
            "/api/admin/users/{name}",
            delete(crate::auth::admin::delete_user),
        )
        .route(
            "/api/admin/users/{name}/password",
            post(crate::auth::admin::reset_password),
        )
        .route("/api/login", post(crate::auth::session::login))
        .route("/api/logout", post(crate::auth::session::logout))
        .route("/api/session", get(crate::auth::session::session))
        .route("/", get(crate::ui::index))
        .route("/ui/{*path}", get(crate::ui::asset))
        .layer(DefaultBodyLimit::max(body_limit))
        // Bodies arrive within limits.body_read_timeout, after auth (a refused request's
        // body is never read).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::http::body,
        ))
        // Outermost: nothing runs for a request the auth layer refuses.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::layer,
        ))
        .with_state(state)
}

/// `POST /-/reload` (also SIGHUP, `kiln reload`).
async fn reload(
    State(state): State<Arc<AppState>>,
) -> Result<&'static str, crate::api_error::ApiError> {
    let task = state.clone();
    tokio::task::spawn_blocking(move || task.reload())
        .await
        .map_err(|e| crate::api_error::ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "reload refused; the previous configuration keeps serving");
            crate::api_error::ApiError::bad_request("reload_failed", format!("{e:#}"))
        })?;
    Ok("reloaded\n")
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some((free, _)) = state.durable.disk().measure() {
        state.metrics.disk_free(free);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves until SIGINT/SIGTERM, then flushes storage.
pub async fn run(config: Config, config_source: ConfigSource) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let flush_interval = config.server.flush_interval;
    let self_profiling = config.server.self_profiling;
    // Plugins start here (their `init` runs); a Wasm plugin's WASI calls block, so this must not
    // run on a runtime worker.
    let state = tokio::task::spawn_blocking(move || AppState::new(config, Some(config_source)))
        .await
        .context("starting")??;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        auth = state.auth.config.enabled,
        tls = state.tls.is_some(),
        mutual_tls = state.tls.as_ref().is_some_and(|t| t.mutual()),
        "kiln listening"
    );
    if !state.auth.config.enabled && !address.ip().is_loopback() {
        if state.auth.config.allow_unauthenticated {
            tracing::warn!(%address, "auth is off and auth.allow_unauthenticated = true: every host that reaches this address may push, read and delete without credentials");
        } else {
            tracing::warn!(%address, "auth is off on a non-loopback address: requests from other hosts get 403; turn auth on ([auth] enabled = true, KILN_AUTH_ENABLED=true or --auth) and create API keys with `kiln admin apikey create`, or set auth.allow_unauthenticated = true");
        }
    }

    let flusher = tokio::spawn(flush_loop(state.clone(), flush_interval));
    let retention = tokio::spawn(retention_loop(state.clone()));
    let profiler = self_profiling.then(|| tokio::spawn(crate::selfprof::run(state.clone())));
    let heap_profiler =
        self_profiling.then(|| tokio::spawn(crate::selfprof::run_heap(state.clone())));
    let hangup = tokio::spawn(reload_on_sighup(state.clone()));
    let scraper = tokio::spawn(crate::scrape::run(state.clone()));
    let remote_write = tokio::spawn(crate::rules::remote_write::run(state.clone()));

    serve(listener, state.clone(), shutdown_signal()).await;

    flusher.abort();
    retention.abort();
    hangup.abort();
    scraper.abort();
    remote_write.abort();
    for p in [profiler, heap_profiler].into_iter().flatten() {
        p.abort();
    }
    // What the applier has not reached stays in the log and is replayed at the next start.
    state.durable.caught_up(Duration::from_secs(5)).await;
    state.durable.close().await.context("final flush")?;
    tracing::info!("kiln stopped; data flushed");
    Ok(())
}

/// Accepts connections until `shutdown`, then lets open ones finish (10 s at most). Plain
/// HTTP/1.1, or HTTPS with the TLS configuration current at each accept; a client gets
/// `limits.header_read_timeout` for the TLS handshake and for each request's headers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let header_timeout = state.limits.config().header_read_timeout;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let app = router(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = state.tls.as_ref().map(|t| t.acceptor());
        let over_tls = tls.is_some();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                // Session cookies are marked Secure on requests that came over TLS.
                if over_tls {
                    req.extensions_mut().insert(crate::auth::OverTls);
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            },
        );
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out (limits.header_read_timeout)");
                            return;
                        }
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}

async fn flush_loop(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A flush rewrites every coarse bucket touched since the last one: an early flush comes a
    // quarter interval after the last flush at the soonest (5 s at the latest, for long
    // intervals).
    let early_gap = (every / 4).min(Duration::from_secs(5));
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.durable.flush_wanted() => {
                tokio::time::sleep_until(last + early_gap).await;
                state.metrics.early_flush();
            }
        }
        if let Err(e) = state.storage.flush().await {
            tracing::error!(error = %e, "flush failed");
        }
        last = tokio::time::Instant::now();
    }
}

async fn retention_loop(state: Arc<AppState>) {
    // Not at once: a pass reads every chunk (retention by size counts them the first time),
    // and right after a restart that scan competed with the first queries (a cold 24 h query
    // took 0.3 s instead of 7 ms). Expired data waits at most a minute more.
    let period = state.config.storage.retention_interval;
    let first = tokio::time::Instant::now() + period.min(Duration::from_secs(60));
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.storage.enforce_retention(crate::time::now_ns()).await {
            Ok(r) if r.chunks_deleted > 0 => {
                tracing::info!(chunks = r.chunks_deleted, "retention pass")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention pass failed"),
        }
        crate::storage_api::size_retention(&state).await;
    }
}

async fn reload_on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let task = state.clone();
            match tokio::task::spawn_blocking(move || task.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "reload refused; the previous configuration keeps serving")
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
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
