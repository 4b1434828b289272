//! The write buffer: profiles become rows of the four tables here, and are sent in one insert
//! per table when the buffer is large or old enough, and at every flush.
//!
//! Each profile adds its stacks' values to one bucket row per time level; profiles of the same
//! series and bucket in one buffer share the row (coarse buckets gather many).
//!
//! Rows not yet accepted by ClickHouse stay queued per table and are sent again, tables in
//! dependency order (frames, stacks, series, then the buckets of the coarse levels and of the
//! finest), so a value never lands before the stack it refers to, and a table already sent is
//! not sent twice.

use std::time::{Duration, Instant};

use kiln_plugin_api::{Profile, Tenant};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::ids;
use crate::rowbinary::RowWriter;

const NS: i64 = 1_000_000_000;

/// Tables in the order they are sent, with the columns their rows give (all of them when
/// empty): frames and stacks leave `inserted` to the server, so it says when a row arrived, not
/// when it was buffered.
pub const TABLES: [(&str, &str); 5] = [
    (
        "frames",
        "(tenant, service, frame, function, file, line, start_line)",
    ),
    ("stacks", "(tenant, service, stack, frames)"),
    ("series", ""),
    ("buckets", ""),
    // The finest level's rows, in a table that does not sum them (see `schema`).
    ("fine", ""),
];

/// Frame and stack ids already written per service: skipped on later writes. Bounded: past
/// [`Known::MAX`] entries, or `max_age` after it started, it starts over (rewriting a row is
/// harmless, the tables deduplicate). The age bound is what lets the retention pass delete the
/// dictionary rows of a service with no data left: no daemon skips a row inserted longer ago
/// than `max_age` ([`crate::ClickHouseConfig::dictionary_collect_after`]).
pub struct Known {
    frames: FxHashSet<(u64, u64)>,
    stacks: FxHashSet<(u64, u64)>,
    started: Instant,
    max_age: Duration,
}

impl Known {
    const MAX: usize = 4 << 20;

    pub fn new(max_age: Duration) -> Self {
        Self {
            frames: FxHashSet::default(),
            stacks: FxHashSet::default(),
            started: Instant::now(),
            max_age,
        }
    }

    fn trim(&mut self) {
        if self.frames.len() + self.stacks.len() > Self::MAX
            || self.started.elapsed() >= self.max_age
        {
            self.frames.clear();
            self.stacks.clear();
            self.started = Instant::now();
        }
    }
}

/// One row of `buckets`: profiles, their total, and the value of each stack.
#[derive(Default)]
struct Bucket {
    profiles: u64,
    total: i64,
    stacks: FxHashMap<u64, i64>,
}

/// What the writes since the last send produced.
#[derive(Default)]
pub struct Buffer {
    services: Vec<(String, String)>,
    /// By [`ids::service`], as [`Known`] keys them.
    service_index: FxHashMap<u64, u32>,
    frames: RowWriter,
    stacks: RowWriter,
    series: RowWriter,
    /// Series rows (service key, series, hour) in this buffer. Not kept across sends: a
    /// service deleted by another daemon must get its series rows again.
    series_seen: FxHashSet<(u64, u64, i64)>,
    /// Rows of `buckets` by (service, series, level, bucket).
    buckets: FxHashMap<(u32, u64, u8, i64), Bucket>,
    /// Stack values in `buckets`: what a row costs ClickHouse, so what batch sizes count.
    values: usize,
    pub since: Option<Instant>,
    /// The last write-ahead log record in this buffer.
    pub seq: Option<u64>,
}

impl Buffer {
    pub fn rows(&self) -> usize {
        self.frames.rows + self.stacks.rows + self.series.rows + self.buckets.len() + self.values
    }

    /// The index of `service` of `tenant` in this buffer; `key` is their [`ids::service`].
    fn service(&mut self, tenant: &str, service: &str, key: u64) -> u32 {
        if let Some(&i) = self.service_index.get(&key) {
            return i;
        }
        let i = self.services.len() as u32;
        self.services
            .push((tenant.to_string(), service.to_string()));
        self.service_index.insert(key, i);
        i
    }

    /// Adds validated `profiles` of `tenant`; `levels` are `(resolution, retention)` seconds.
    pub fn add(
        &mut self,
        known: &mut Known,
        levels: &[(u64, u64)],
        tenant: &Tenant,
        profiles: &[Profile],
    ) {
        let tenant = tenant.as_str();
        self.since.get_or_insert_with(Instant::now);
        known.trim();
        let mut frame_ids: Vec<u64> = Vec::new();
        let mut stacks: FxHashMap<u64, i64> = FxHashMap::default();
        // Stack id of each sample of the previous profile: a pprof with several sample types
        // arrives as consecutive profiles with the same frames and stacks, hashed once.
        let mut sample_ids: Vec<u64> = Vec::new();
        let mut previous: Option<&Profile> = None;
        for p in profiles {
            let service = p.labels.service_name().expect("validated");
            let svc_key = ids::service(tenant, service);
            let svc = self.service(tenant, service, svc_key);
            let same_stacks = previous.is_some_and(|q| q.shares_stacks_with(p));
            previous = Some(p);
            if !same_stacks {
                let service = (tenant, service, svc_key);
                self.add_stacks(known, service, p, &mut frame_ids, &mut sample_ids);
            }
            stacks.clear();
            for (s, &id) in p.samples.iter().zip(&sample_ids) {
                *stacks.entry(id).or_default() += s.value;
            }
            let series = ids::series(&p.labels, &p.profile_type);
            let t = p.start_ns.max(0) / NS;
            let hour = t / 3600 * 3600;
            if self.series_seen.insert((svc_key, series, hour)) {
                let labels = serde_json::to_string(&p.labels).expect("labels serialize");
                let profile_type =
                    serde_json::to_string(&p.profile_type).expect("profile types serialize");
                self.series
                    .str(tenant)
                    .str(service)
                    .u64(series)
                    .i64(hour)
                    .str(&labels)
                    .str(&profile_type)
                    .str(&p.meta.spy_name)
                    .u32(p.meta.sample_rate)
                    .end_row();
            }
            let total: i64 = stacks.values().sum();
            for (level, &(res, _)) in levels.iter().enumerate() {
                let bucket = t / res as i64 * res as i64;
                let row = self
                    .buckets
                    .entry((svc, series, level as u8, bucket))
                    .or_default();
                row.profiles += 1;
                row.total += total;
                let before = row.stacks.len();
                if before == 0 {
                    row.stacks.clone_from(&stacks);
                } else {
                    for (&stack, &v) in &stacks {
                        *row.stacks.entry(stack).or_default() += v;
                    }
                }
                self.values += row.stacks.len() - before;
            }
        }
    }

    /// Ids of `p`'s frames into `frame_ids` and of each sample's stack into `sample_ids`; rows
    /// for those `known` has not seen. `service` is (tenant, name, key).
    fn add_stacks(
        &mut self,
        known: &mut Known,
        (tenant, service, svc_key): (&str, &str, u64),
        p: &Profile,
        frame_ids: &mut Vec<u64>,
        sample_ids: &mut Vec<u64>,
    ) {
        frame_ids.clear();
        for f in &p.frames {
            let id = ids::frame(f);
            frame_ids.push(id);
            if known.frames.insert((svc_key, id)) {
                self.frames
                    .str(tenant)
                    .str(service)
                    .u64(id)
                    .str(&f.function)
                    .str(&f.file)
                    .u32(f.line)
                    .u32(f.start_line)
                    .end_row();
            }
        }
        sample_ids.clear();
        let mut stack_frames = Vec::new();
        for s in &p.samples {
            stack_frames.clear();
            stack_frames.extend(s.stack.iter().map(|&i| frame_ids[i as usize]));
            let id = ids::stack(&stack_frames);
            if known.stacks.insert((svc_key, id)) {
                self.stacks
                    .str(tenant)
                    .str(service)
                    .u64(id)
                    .array_u64(&stack_frames)
                    .end_row();
            }
            sample_ids.push(id);
        }
    }

    /// The rows of each table of [`TABLES`], encoded; the finest level's bucket rows go to
    /// `fine`.
    pub fn encode(self) -> [RowWriter; TABLES.len()] {
        let (mut buckets, mut fine) = (RowWriter::default(), RowWriter::default());
        let (mut pairs, mut ids, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for ((svc, series, level, bucket), row) in self.buckets {
            let (t, s) = &self.services[svc as usize];
            // In stack order: a series' rows follow each other on disk, and the stacks of one
            // bucket are mostly those of the one before, so sorted the arrays repeat runs the
            // part's compression finds (in hash-map order they would not).
            pairs.clear();
            pairs.extend(row.stacks);
            pairs.sort_unstable_by_key(|&(stack, _)| stack);
            ids.clear();
            values.clear();
            for &(stack, v) in &pairs {
                ids.push(stack);
                values.push(v);
            }
            let table = if level == 0 { &mut fine } else { &mut buckets };
            table
                .str(t)
                .str(s)
                .u64(series)
                .u8(level)
                .i64(bucket)
                .u64(row.profiles)
                .i64(row.total)
                .array_u64(&ids)
                .array_i64(&values)
                .end_row();
        }
        [self.frames, self.stacks, self.series, buckets, fine]
    }
}

#[cfg(test)]
mod tests {
    use kiln_plugin_api::{Frame, Labels, ProfileMeta, ProfileType, Sample};

    use super::*;
    use crate::rowbinary::RowReader;

    #[test]
    fn a_finest_row_lists_its_stacks_in_order() {
        let n = 200;
        let profile = Profile {
            labels: Labels::from_pairs([("service_name", "svc")]),
            profile_type: ProfileType::well_known("cpu").unwrap(),
            start_ns: 1_700_000_000 * NS,
            end_ns: 1_700_000_010 * NS,
            frames: (0..n).map(|i| Frame::named(format!("f{i}"))).collect(),
            samples: (0..n)
                .map(|i| Sample {
                    stack: vec![i],
                    value: 1 + i as i64,
                })
                .collect(),
            meta: ProfileMeta::default(),
        };
        let mut buffer = Buffer::default();
        let levels = [(10, 86_400), (1_000, 86_400)];
        let known = &mut Known::new(Duration::from_secs(60));
        buffer.add(known, &levels, &Tenant::default(), &[profile]);
        let [.., fine] = buffer.encode();
        assert_eq!(fine.rows, 1);
        let mut r = RowReader::new(&fine.bytes);
        assert_eq!(
            (r.string().unwrap(), r.string().unwrap()),
            ("anonymous".into(), "svc".into())
        );
        let (_series, level, _bucket) = (r.u64().unwrap(), r.u8().unwrap(), r.i64().unwrap());
        assert_eq!(level, 0);
        let (profiles, total) = (r.u64().unwrap(), r.i64().unwrap());
        let (ids, values) = (r.array_u64().unwrap(), r.array_i64().unwrap());
        assert!(r.at_end());
        assert_eq!((profiles, total), (1, (1..=n as i64).sum()));
        assert_eq!(ids.len(), n as usize);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "stacks in hash order");
        let mut sorted_values = values.clone();
        sorted_values.sort_unstable();
        assert_eq!(sorted_values, (1..=n as i64).collect::<Vec<_>>());
    }
}
