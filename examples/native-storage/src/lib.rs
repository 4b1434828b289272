//! `memory`: a native Kiln storage plugin that keeps the most recent profiles in memory —
//! nothing on disk, everything gone at restart. For ephemeral daemons: CI jobs, demos, tests.
//!
//! ```toml
//! [storage]
//! type = "memory"
//! [storage.options]
//! max_profiles = 100000   # the oldest are dropped beyond this
//! max_age_secs = 86400    # retention passes drop older profiles
//! ```
//!
//! It implements the same `Storage` trait as the built-in sled backend; the daemon cannot tell
//! them apart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use kiln_plugin_api::abi::FromConfig;
use kiln_plugin_api::{
    Aggregation, Labels, Merged, Profile, ProfileType, Query, RetentionReport, Selector,
    SeriesInfo, Storage, StorageError, Tenant, Timeline, TreeBuilder,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    max_profiles: usize,
    max_age_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_profiles: 100_000,
            max_age_secs: 86_400,
        }
    }
}

pub struct MemoryStorage {
    options: Options,
    /// Profiles in arrival order, each with its tenant.
    profiles: Mutex<VecDeque<(Tenant, Profile)>>,
}

impl FromConfig for MemoryStorage {
    fn from_config(json: &str) -> Result<Self, String> {
        let options: Options = if json.trim().is_empty() {
            Options::default()
        } else {
            serde_json::from_str(json).map_err(|e| format!("memory storage options: {e}"))?
        };
        if options.max_profiles == 0 {
            return Err("memory storage options: `max_profiles` must be at least 1".into());
        }
        Ok(Self {
            options,
            profiles: Mutex::new(VecDeque::new()),
        })
    }
}

impl MemoryStorage {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, VecDeque<(Tenant, Profile)>>, StorageError> {
        self.profiles
            .lock()
            .map_err(|_| StorageError::Corrupt("a previous call panicked mid-update".into()))
    }
}

const NS: i64 = 1_000_000_000;

fn in_range(p: &Profile, start_ns: i64, end_ns: i64) -> bool {
    p.start_ns >= start_ns && p.start_ns < end_ns
}

/// The profiles of `tenant` in `profiles`.
fn of<'a>(
    profiles: &'a VecDeque<(Tenant, Profile)>,
    tenant: &'a Tenant,
) -> impl Iterator<Item = &'a Profile> + 'a {
    profiles
        .iter()
        .filter(move |(t, _)| t == tenant)
        .map(|(_, p)| p)
}

fn selected<'a>(
    profiles: &'a VecDeque<(Tenant, Profile)>,
    tenant: &'a Tenant,
    q: &'a Query,
) -> impl Iterator<Item = &'a Profile> + 'a {
    of(profiles, tenant).filter(|p| {
        in_range(p, q.start_ns, q.end_ns) && q.selector.matches(&p.labels, &p.profile_type)
    })
}

type SeriesKey = (String, String);

fn series_key(labels: &Labels, t: &ProfileType) -> SeriesKey {
    (labels.to_string(), t.id())
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        let mut stored = self.lock()?;
        stored.extend(profiles.into_iter().map(|p| (tenant.clone(), p)));
        while stored.len() > self.options.max_profiles {
            stored.pop_front();
        }
        Ok(())
    }

    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError> {
        let stored = self.lock()?;
        let mut builder = TreeBuilder::default();
        let mut count = 0;
        let mut series = BTreeSet::new();
        for p in selected(&stored, tenant, query) {
            for s in &p.samples {
                builder.add(p.stack_names(s), s.value);
            }
            count += 1;
            series.insert(series_key(&p.labels, &p.profile_type));
        }
        Ok(Merged {
            tree: builder.build(),
            profiles: count,
            series: series.len() as u64,
            ..Merged::default()
        })
    }

    async fn select_timeline(
        &self,
        tenant: &Tenant,
        query: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        // Same bucketing as the built-in backend: whole-second steps, the first point aligned
        // to a multiple of the step, and a level type (in-use memory) averaged per series.
        let step_s = (step_ns / NS).max(1);
        let start_s = query.start_ns.div_euclid(NS).div_euclid(step_s) * step_s;
        let end_s = (query.end_ns + NS - 1).div_euclid(NS);
        let points = ((end_s - start_s + step_s - 1) / step_s).max(1) as usize;
        let stored = self.lock()?;
        // (group, series, point) -> (sum, profiles)
        let mut buckets: BTreeMap<(String, SeriesKey, usize), (i64, i64, bool)> = BTreeMap::new();
        for p in selected(&stored, tenant, query) {
            let group = group_by
                .map(|l| p.labels.get(l).unwrap_or("").to_string())
                .unwrap_or_default();
            let point = ((p.start_ns.div_euclid(NS) - start_s) / step_s) as usize;
            if point >= points {
                continue;
            }
            let average = p.profile_type.aggregation == Aggregation::Average;
            let bucket = buckets
                .entry((group, series_key(&p.labels, &p.profile_type), point))
                .or_insert((0, 0, average));
            bucket.0 += p.total();
            bucket.1 += 1;
        }
        let mut lines: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for ((group, _, point), (sum, profiles, average)) in buckets {
            let line = lines.entry(group).or_insert_with(|| vec![0; points]);
            line[point] += if average { sum / profiles } else { sum };
        }
        Ok(lines
            .into_iter()
            .map(|(group, points)| {
                let timeline = Timeline {
                    start_ns: start_s * NS,
                    step_ns: step_s * NS,
                    points,
                };
                (group, timeline)
            })
            .collect())
    }

    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        let stored = self.lock()?;
        let mut found: BTreeMap<SeriesKey, SeriesInfo> = BTreeMap::new();
        for p in of(&stored, tenant).filter(|p| {
            in_range(p, start_ns, end_ns)
                && selector.is_none_or(|s| s.matches(&p.labels, &p.profile_type))
        }) {
            found
                .entry(series_key(&p.labels, &p.profile_type))
                .or_insert_with(|| SeriesInfo {
                    labels: p.labels.clone(),
                    profile_type: p.profile_type.clone(),
                    spy_name: p.meta.spy_name.clone(),
                    sample_rate: p.meta.sample_rate,
                });
        }
        Ok(found.into_values().collect())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError> {
        let cutoff =
            now_ns.saturating_sub((self.options.max_age_secs as i64).saturating_mul(1_000_000_000));
        let mut stored = self.lock()?;
        let before = stored.len();
        stored.retain(|(_, p)| p.start_ns >= cutoff);
        Ok(RetentionReport {
            chunks_deleted: (before - stored.len()) as u64,
        })
    }

    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError> {
        let mut stored = self.lock()?;
        let mut deleted = BTreeSet::new();
        stored.retain(|(t, p)| {
            let hit = t == tenant && p.labels.service_name() == Some(service_name);
            if hit {
                deleted.insert(series_key(&p.labels, &p.profile_type));
            }
            !hit
        });
        Ok(deleted.len() as u64)
    }
}

kiln_plugin_api::export_plugin!(storage, "memory", "0.1.0", MemoryStorage);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_api::abi::block_on;
    use kiln_plugin_api::{Frame, ProfileMeta, Sample};

    fn profile(service: &str, at_s: i64, stacks: &[(&[u32], i64)]) -> Profile {
        Profile {
            labels: Labels::from_pairs([("service_name", service), ("env", "test")]),
            profile_type: ProfileType::well_known("cpu").unwrap(),
            start_ns: at_s * 1_000_000_000,
            end_ns: (at_s + 10) * 1_000_000_000,
            frames: vec![Frame::named("main"), Frame::named("work")],
            samples: stacks
                .iter()
                .map(|(s, v)| Sample {
                    stack: s.to_vec(),
                    value: *v,
                })
                .collect(),
            meta: ProfileMeta::default(),
        }
    }

    fn query(sel: &str, from_s: i64, to_s: i64) -> Query {
        Query {
            selector: Selector::parse(sel).unwrap(),
            start_ns: from_s * 1_000_000_000,
            end_ns: to_s * 1_000_000_000,
        }
    }

    #[test]
    fn merges_selects_and_forgets() {
        let s = MemoryStorage::from_config(r#"{"max_profiles": 3}"#).unwrap();
        let t = &Tenant::default();
        block_on(s.write(
            t,
            vec![
                profile("a", 0, &[(&[0, 1], 5)]),
                profile("a", 10, &[(&[0], 2)]),
                profile("b", 10, &[(&[0, 1], 7)]),
            ],
        ))
        .unwrap();
        let m = block_on(s.select_merge(t, &query("a.cpu", 0, 100))).unwrap();
        assert_eq!((m.tree.total(), m.profiles, m.series), (7, 2, 1));
        let tl = block_on(s.select_timeline(t, &query("a.cpu", 0, 20), 10 * NS, None)).unwrap();
        assert_eq!(tl[0].1.points, vec![5, 2]);
        // A fourth profile pushes out the oldest.
        block_on(s.write(t, vec![profile("b", 20, &[(&[0], 1)])])).unwrap();
        let m = block_on(s.select_merge(t, &query("a.cpu", 0, 100))).unwrap();
        assert_eq!(m.tree.total(), 2);
        assert_eq!(block_on(s.delete_service(t, "b")).unwrap(), 1);
        assert_eq!(block_on(s.series(t, None, 0, i64::MAX)).unwrap().len(), 1);
    }

    #[test]
    fn tenants_never_see_each_other() {
        let s = MemoryStorage::from_config("{}").unwrap();
        let (a, b) = (Tenant::new("a").unwrap(), Tenant::new("b").unwrap());
        block_on(s.write(&a, vec![profile("app", 0, &[(&[0], 5)])])).unwrap();
        block_on(s.write(&b, vec![profile("app", 0, &[(&[0], 7)])])).unwrap();
        let total = |t: &Tenant| {
            block_on(s.select_merge(t, &query("app.cpu", 0, 100)))
                .unwrap()
                .tree
                .total()
        };
        assert_eq!((total(&a), total(&b)), (5, 7));
        assert_eq!(block_on(s.delete_service(&a, "app")).unwrap(), 1);
        assert_eq!((total(&a), total(&b)), (0, 7));
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let e = MemoryStorage::from_config(r#"{"max_profile": 3}"#)
            .err()
            .unwrap();
        assert!(e.contains("max_profile"), "{e}");
    }
}
