//! Self-profiling: the daemon samples its own CPU with the `pprof` crate, and its heap with
//! jemalloc's sampling profiler, and ingests the results into its own pipeline as the
//! application `kiln.server`, under the default tenant.

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

/// Runs until the daemon stops.
pub async fn run(state: Arc<AppState>) {
    loop {
        let guard = match pprof::ProfilerGuardBuilder::default()
            .frequency(HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "self-profiling could not start; disabled");
                return;
            }
        };
        let start_ns = crate::time::now_ns();
        tokio::time::sleep(PERIOD).await;
        let report = match guard.report().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "self-profiling report failed");
                continue;
            }
        };
        drop(guard);
        let profile = to_profile(&report, start_ns, crate::time::now_ns());
        if profile.samples.is_empty() {
            continue;
        }
        let pipeline = state.ingestion.load().pipelines.route(APP, &profile.labels);
        if let Err(e) = pipeline
            .store(state.storage.as_ref(), &Tenant::default(), vec![profile])
            .await
        {
            tracing::warn!(error = %e, "storing the self-profile failed");
        }
    }
}

fn to_profile(report: &pprof::Report, start_ns: i64, end_ns: i64) -> Profile {
    let mut frames: Vec<Frame> = Vec::new();
    let mut ids: FxHashMap<String, u32> = FxHashMap::default();
    let mut samples = Vec::new();
    for (stack, &count) in &report.data {
        let mut ids_root_first: Vec<u32> = Vec::new();
        // pprof-rs lists frames leaf first, each possibly with inlined symbols.
        for symbols in stack.frames.iter().rev() {
            for sym in symbols.iter().rev() {
                let name = sym.name();
                let id = *ids.entry(name.clone()).or_insert_with(|| {
                    frames.push(Frame::named(name));
                    frames.len() as u32 - 1
                });
                ids_root_first.push(id);
            }
        }
        if count > 0 {
            samples.push(Sample {
                stack: ids_root_first,
                value: count as i64,
            });
        }
    }
    Profile {
        labels: Labels::from_pairs([("service_name", APP)]),
        profile_type: ProfileType::well_known("cpu").expect("cpu is well known"),
        start_ns,
        end_ns,
        frames,
        samples,
        meta: ProfileMeta {
            spy_name: "kiln".into(),
            sample_rate: HZ as u32,
        },
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
        let meta = IngestMeta {
            format: Some("pprof".into()),
            app: APP.into(),
            labels: Labels::from_pairs([("service_name", APP)]),
            start_ns,
            end_ns: crate::time::now_ns(),
            spy_name: "kiln".into(),
            ..IngestMeta::default()
        };
        let profiles = match decoder.decode(&pprof, &meta) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "heap self-profile did not decode");
                continue;
            }
        };
        let profiles: Vec<Profile> = profiles
            .into_iter()
            .filter_map(|mut p| {
                let name = if p.profile_type.sample_unit == "bytes" {
                    "inuse_space"
                } else {
                    "inuse_objects"
                };
                p.profile_type = ProfileType::well_known(name).expect("well known");
                (!p.samples.is_empty()).then_some(p)
            })
            .collect();
        let pipeline = state.ingestion.load().pipelines.route(APP, &meta.labels);
        if let Err(e) = pipeline
            .store(state.storage.as_ref(), &Tenant::default(), profiles)
            .await
        {
            tracing::warn!(error = %e, "storing the heap self-profile failed");
        }
    }
}
