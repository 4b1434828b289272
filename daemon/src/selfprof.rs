//! Self-profiling: the daemon samples its own CPU with the Rust SDK's sampler (SIGPROF, a
//! fixed 1 MB buffer, names from the ELF symbol tables) and its heap with jemalloc's sampling
//! profiler, and ingests the results into its own pipeline as the application `kiln.server`,
//! under the default tenant.

use std::sync::Arc;
use std::time::Duration;

use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile, ProfileType, Tenant};

use crate::server::AppState;

const APP: &str = "kiln.server";
const HZ: i32 = 100;
const PERIOD: Duration = Duration::from_secs(10);
/// How often the sampling thread empties the signal handler's buffer (it holds a few seconds).
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// Runs until the daemon stops: a thread samples and encodes, this task decodes and stores.
pub async fn run(state: Arc<AppState>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, i64, i64)>(2);
    let started = std::thread::Builder::new()
        .name("kiln-selfprof".into())
        .spawn(move || sample(tx));
    if let Err(e) = started {
        tracing::warn!(error = %e, "self-profiling could not start; disabled");
        return;
    }
    let decoder = kiln_pprof::PprofDecoder::default();
    while let Some((pprof, start_ns, end_ns)) = rx.recv().await {
        let meta = meta(start_ns, end_ns);
        let profiles = match decoder.decode(&pprof, &meta) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "CPU self-profile did not decode");
                continue;
            }
        };
        store(&state, &meta, profiles, "CPU").await;
    }
}

/// The sampling thread: drains every second, hands over a profile every period, and stops
/// (with the sampler's timer) once the receiving task is gone.
fn sample(tx: tokio::sync::mpsc::Sender<(Vec<u8>, i64, i64)>) {
    let mut profiler = match kiln_sdk::LocalProfiler::start(HZ) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "self-profiling could not start; disabled");
            return;
        }
    };
    loop {
        let mut waited = Duration::ZERO;
        while waited < PERIOD {
            std::thread::sleep(DRAIN_EVERY);
            waited += DRAIN_EVERY;
            profiler.drain();
        }
        if tx.is_closed() {
            return;
        }
        let Some((pprof, from, lost)) = profiler.collect() else {
            continue;
        };
        if lost > 0 {
            tracing::debug!(lost, "self-profiling samples dropped (buffer full)");
        }
        let start_ns = from
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        // A full channel means storing is behind: this period's profile is skipped.
        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
            tx.try_send((pprof, start_ns, crate::time::now_ns()))
        {
            return;
        }
    }
}

fn meta(start_ns: i64, end_ns: i64) -> IngestMeta {
    IngestMeta {
        format: Some("pprof".into()),
        app: APP.into(),
        labels: Labels::from_pairs([("service_name", APP)]),
        start_ns,
        end_ns,
        spy_name: "kiln".into(),
        ..IngestMeta::default()
    }
}

async fn store(state: &AppState, meta: &IngestMeta, profiles: Vec<Profile>, what: &str) {
    let profiles: Vec<Profile> = profiles
        .into_iter()
        .filter(|p| !p.samples.is_empty())
        .collect();
    if profiles.is_empty() {
        return;
    }
    let pipeline = state.ingestion.load().pipelines.route(APP, &meta.labels);
    if let Err(e) = pipeline
        .store(state.storage.as_ref(), &Tenant::default(), profiles)
        .await
    {
        tracing::warn!(error = %e, "storing the {what} self-profile failed");
    }
}

/// Every period, jemalloc's sampled in-use heap becomes the `inuse_space` and `inuse_objects`
/// profiles of `kiln.server`: where the daemon's memory is, in its own UI.
pub async fn run_heap(state: Arc<AppState>) {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        tracing::warn!("jemalloc heap sampling is not available; no heap self-profile");
        return;
    };
    if let Err(e) = ctl.lock().await.activate() {
        tracing::warn!(error = %e, "jemalloc heap sampling could not start; no heap self-profile");
        return;
    }
    let decoder = kiln_pprof::PprofDecoder::default();
    loop {
        let start_ns = crate::time::now_ns();
        tokio::time::sleep(PERIOD).await;
        let dumped = {
            let mut ctl = ctl.lock().await;
            tokio::task::block_in_place(|| ctl.dump_pprof())
        };
        let pprof = match dumped {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "heap self-profile dump failed");
                continue;
            }
        };
        let meta = meta(start_ns, crate::time::now_ns());
        let profiles = match decoder.decode(&pprof, &meta) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "heap self-profile did not decode");
                continue;
            }
        };
        let profiles: Vec<Profile> = profiles
            .into_iter()
            .map(|mut p| {
                let name = if p.profile_type.sample_unit == "bytes" {
                    "inuse_space"
                } else {
                    "inuse_objects"
                };
                p.profile_type = ProfileType::well_known(name).expect("well known");
                p
            })
            .collect();
        store(&state, &meta, profiles, "heap").await;
    }
}
