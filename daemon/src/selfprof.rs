//! Self-profiling: the daemon samples its own CPU with the `pprof` crate and ingests the result
//! into its own pipeline as the application `kiln.server`.

use std::sync::Arc;
use std::time::Duration;

use kiln_plugin_api::{Frame, Labels, Profile, ProfileMeta, ProfileType, Sample};
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
        if let Err(e) = pipeline.store(state.storage.as_ref(), vec![profile]).await {
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
