//! Self-profiling: the daemon samples its own CPU with the Rust SDK's sampler (SIGPROF, a
//! fixed 1 MB buffer, names from the ELF symbol tables) and its heap with jemalloc's sampling
//! profiler, and ingests the results into its own pipeline as the application `kiln.server`,
//! under the default tenant.

use std::sync::Arc;
use std::time::Duration;

use kiln_plugin_api::{
    Decoder, Frame, IngestMeta, Labels, Profile, ProfileMeta, ProfileType, Sample, Tenant,
};
use rustc_hash::FxHashMap;

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

/// Every period, jemalloc's sampled in-use heap becomes the `inuse_space` profile of
/// `kiln.server`: where the daemon's memory is, in its own UI. The dump's return addresses are
/// named from the ELF symbol tables through the SDK's symbolizer; jemalloc_pprof's own
/// symbolization parses DWARF and kept about 30 MB of it resident for good.
pub async fn run_heap(state: Arc<AppState>) {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        tracing::warn!("jemalloc heap sampling is not available; no heap self-profile");
        return;
    };
    if let Err(e) = ctl.lock().await.activate() {
        tracing::warn!(error = %e, "jemalloc heap sampling could not start; no heap self-profile");
        return;
    }
    let mut names = kiln_sdk::AddressNames::default();
    loop {
        let start_ns = crate::time::now_ns();
        tokio::time::sleep(PERIOD).await;
        let stacks = {
            let mut ctl = ctl.lock().await;
            tokio::task::block_in_place(|| {
                let dump = std::io::BufReader::new(ctl.dump()?);
                pprof_util::parse_jeheap(dump, None)
            })
        };
        let stacks = match stacks {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "heap self-profile dump failed");
                continue;
            }
        };
        let profile = tokio::task::block_in_place(|| {
            heap_profile(&stacks, &mut names, start_ns, crate::time::now_ns())
        });
        store(
            &state,
            &meta(start_ns, profile.end_ns),
            vec![profile],
            "heap",
        )
        .await;
    }
}

/// jemalloc's sampled stacks (root first, estimated bytes each) as an `inuse_space` profile.
fn heap_profile(
    stacks: &pprof_util::StackProfile,
    names: &mut kiln_sdk::AddressNames,
    start_ns: i64,
    end_ns: i64,
) -> Profile {
    names.refresh();
    let mut frames: Vec<Frame> = Vec::new();
    let mut ids: FxHashMap<Arc<str>, u32> = FxHashMap::default();
    let mut samples = Vec::new();
    for (stack, _) in stacks.iter() {
        let bytes = stack.weight.trunc() as i64;
        if bytes <= 0 {
            continue;
        }
        let stack = stack
            .addrs
            .iter()
            .map(|&addr| {
                let name = names.name(addr);
                *ids.entry(name.clone()).or_insert_with(|| {
                    frames.push(Frame::named(name.as_ref()));
                    frames.len() as u32 - 1
                })
            })
            .collect();
        samples.push(Sample {
            stack,
            value: bytes,
        });
    }
    Profile {
        labels: Labels::from_pairs([("service_name", APP)]),
        profile_type: ProfileType::well_known("inuse_space").expect("well known"),
        start_ns,
        end_ns,
        frames,
        samples,
        meta: ProfileMeta {
            spy_name: "kiln".into(),
            sample_rate: 0,
        },
    }
}
