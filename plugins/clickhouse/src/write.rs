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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

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
    // The finest level's rows, in a table that does not sum them (see `schema`), with the
    // columns of a row that stands for a sibling's.
    (
        "fine",
        "(tenant, service, series, level, bucket, profiles, total, `stacksMap.stack`, \
         `stacksMap.value`, sibling, ratio, batch)",
    ),
];

/// Frame and stack ids already written per service: skipped on later writes. Bounded: past
/// [`Known::MAX`] entries, or `max_age` after it started, it starts over (rewriting a row is
/// harmless, the tables deduplicate). The age bound is what lets the retention pass delete the
/// dictionary rows of a service with no data left: no daemon skips a row inserted longer ago
/// than `max_age` ([`crate::ClickHouseConfig::dictionary_collect_after`]).
pub struct Known {
    frames: FxHashSet<(u64, u64)>,
    stacks: FxHashSet<(u64, u64)>,
    /// Ids by content: kept across starts-over, since an id never changes.
    ids: ids::IdCache,
    started: Instant,
    max_age: Duration,
}

impl Known {
    const MAX: usize = 4 << 20;

    pub fn new(max_age: Duration) -> Self {
        Self {
            frames: FxHashSet::default(),
            stacks: FxHashSet::default(),
            ids: ids::IdCache::default(),
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
    /// (service, series) → a series whose profiles had the same stacks in a push: the row it may
    /// stand for at the finest level ([`Buffer::sibling_rows`]).
    siblings: FxHashMap<(u32, u64), u64>,
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
        let mut previous: Option<(&Profile, u64)> = None;
        for p in profiles {
            let service = p.labels.service_name().expect("validated");
            let svc_key = ids::service(tenant, service);
            let svc = self.service(tenant, service, svc_key);
            let series = ids::series(&p.labels, &p.profile_type);
            let same_stacks = previous.is_some_and(|(q, _)| q.shares_stacks_with(p));
            if let (true, Some((_, other))) = (same_stacks, previous) {
                self.siblings.insert((svc, series), other);
                self.siblings.insert((svc, other), series);
            }
            previous = Some((p, series));
            if !same_stacks {
                let service = (tenant, service, svc_key);
                self.add_stacks(known, service, p, &mut frame_ids, &mut sample_ids);
            }
            stacks.clear();
            for (s, &id) in p.samples.iter().zip(&sample_ids) {
                *stacks.entry(id).or_default() += s.value;
            }
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
            let id = known.ids.frame(f);
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
            let id = known.ids.stack(&stack_frames);
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
        let sibling_rows = self.sibling_rows();
        let batch = batch_id();
        let (mut buckets, mut fine) = (RowWriter::default(), RowWriter::default());
        let (mut pairs, mut ids, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for ((svc, series, level, bucket), row) in self.buckets {
            let (t, s) = &self.services[svc as usize];
            // A finest row says which sibling's row it stands for, if any; its arrays are empty.
            // (A coarse bucket can start where a finest one does: only finest rows look.)
            let standing_for = sibling_rows
                .get(&(svc, series, bucket))
                .copied()
                .filter(|_| level == 0);
            ids.clear();
            values.clear();
            if standing_for.is_none() {
                // In stack order: a series' rows follow each other on disk, and the stacks of
                // one bucket are mostly those of the one before, so sorted the arrays repeat
                // runs the part's compression finds (in hash-map order they would not).
                pairs.clear();
                pairs.extend(row.stacks);
                pairs.sort_unstable_by_key(|&(stack, _)| stack);
                ids.extend(pairs.iter().map(|&(stack, _)| stack));
                values.extend(pairs.iter().map(|&(_, v)| v));
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
                .array_i64(&values);
            if level == 0 {
                let (sibling, ratio) = standing_for.unwrap_or((0, 0));
                table.u64(sibling).i64(ratio).u64(batch);
            }
            table.end_row();
        }
        [self.frames, self.stacks, self.series, buckets, fine]
    }

    /// The finest rows that are a sibling's row of this buffer times a whole ratio, by
    /// (service, series, bucket): (sibling series, ratio). A row another one stands for keeps
    /// its arrays, so a reader follows one step at most.
    fn sibling_rows(&self) -> FxHashMap<(u32, u64, i64), (u64, i64)> {
        let mut found = FxHashMap::default();
        for (&(svc, series, level, bucket), row) in &self.buckets {
            let Some(&other) = self.siblings.get(&(svc, series)).filter(|_| level == 0) else {
                continue;
            };
            let base = self.buckets.get(&(svc, other, 0, bucket));
            if let Some(ratio) = base.and_then(|b| multiple_of(row, b)) {
                found.insert((svc, series, bucket), (other, ratio));
            }
        }
        let stands_for_another: FxHashSet<(u32, u64, i64)> = found.keys().copied().collect();
        found.retain(|&(svc, _, bucket), &mut (other, _)| {
            !stands_for_another.contains(&(svc, other, bucket))
        });
        found
    }
}

/// `ratio` when `row` holds `base`'s profiles and stacks, each value `ratio` (2 or more) times
/// `base`'s.
fn multiple_of(row: &Bucket, base: &Bucket) -> Option<i64> {
    if row.profiles != base.profiles
        || row.stacks.len() != base.stacks.len()
        || base.total == 0
        || row.total % base.total != 0
    {
        return None;
    }
    let ratio = row.total / base.total;
    let same = ratio >= 2
        && row.stacks.iter().all(|(stack, &v)| {
            base.stacks
                .get(stack)
                .and_then(|&b| b.checked_mul(ratio))
                .is_some_and(|b| b == v)
        });
    same.then_some(ratio)
}

/// An id for one insert's finest rows, so that a row standing for a sibling's finds the one of
/// its own insert: unique across daemons and their retries of other inserts.
fn batch_id() -> u64 {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&SENT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use kiln_plugin_api::{Frame, Labels, ProfileMeta, ProfileType, Sample};

    use super::*;
    use crate::rowbinary::RowReader;

    /// A profile of `n` one-frame stacks of type `ty`, the i-th worth `value(i)`.
    fn profile(ty: &str, n: u32, value: impl Fn(u32) -> i64) -> Profile {
        Profile {
            labels: Labels::from_pairs([("service_name", "svc")]),
            profile_type: ProfileType::well_known(ty).unwrap(),
            start_ns: 1_700_000_000 * NS,
            end_ns: 1_700_000_010 * NS,
            frames: (0..n).map(|i| Frame::named(format!("f{i}"))).collect(),
            samples: (0..n)
                .map(|i| Sample {
                    stack: vec![i],
                    value: value(i),
                })
                .collect(),
            meta: ProfileMeta::default(),
        }
    }

    /// A row of `buckets` or `fine` as encoded; the sibling columns are `fine`'s (0 in a
    /// coarse row, which has none).
    #[derive(Debug)]
    struct Row {
        series: u64,
        profiles: u64,
        total: i64,
        ids: Vec<u64>,
        values: Vec<i64>,
        sibling: u64,
        ratio: i64,
        batch: u64,
    }

    /// The tables' rows of `profiles` written in one buffer, at 10 s and 1,000 s: the test
    /// profiles start where a bucket of each level does.
    fn encoded(profiles: &[Profile]) -> [RowWriter; TABLES.len()] {
        let mut buffer = Buffer::default();
        let levels = [(10, 86_400), (1_000, 86_400)];
        let known = &mut Known::new(Duration::from_secs(60));
        buffer.add(known, &levels, &Tenant::default(), profiles);
        buffer.encode()
    }

    /// The rows of one table, all of `level`, by series.
    fn rows(table: &RowWriter, level: u8) -> Vec<Row> {
        let mut r = RowReader::new(&table.bytes);
        let mut rows = Vec::new();
        while !r.at_end() {
            let (tenant, service) = (r.string().unwrap(), r.string().unwrap());
            assert_eq!((tenant.as_str(), service.as_str()), ("anonymous", "svc"));
            let series = r.u64().unwrap();
            assert_eq!(r.u8().unwrap(), level);
            r.i64().unwrap();
            let (profiles, total) = (r.u64().unwrap(), r.i64().unwrap());
            let (ids, values) = (r.array_u64().unwrap(), r.array_i64().unwrap());
            let (sibling, ratio, batch) = if level == 0 {
                (r.u64().unwrap(), r.i64().unwrap(), r.u64().unwrap())
            } else {
                (0, 0, 0)
            };
            rows.push(Row {
                series,
                profiles,
                total,
                ids,
                values,
                sibling,
                ratio,
                batch,
            });
        }
        assert_eq!(rows.len(), table.rows);
        rows.sort_by_key(|row| row.series);
        rows
    }

    /// How many stacks each coarse row of `profiles` lists.
    fn coarse_row_stacks(profiles: &[Profile]) -> Vec<usize> {
        let [_, _, _, buckets, _] = encoded(profiles);
        rows(&buckets, 1)
            .iter()
            .map(|row| {
                assert_eq!(row.profiles, 1);
                assert_eq!(row.ids.len(), row.values.len());
                row.ids.len()
            })
            .collect()
    }

    /// The `fine` rows of `profiles` written in one buffer, by series.
    fn fine_rows(profiles: &[Profile]) -> Vec<Row> {
        let [.., fine] = encoded(profiles);
        rows(&fine, 0)
    }

    fn series_of(p: &Profile) -> u64 {
        ids::series(&p.labels, &p.profile_type)
    }

    #[test]
    fn a_finest_row_lists_its_stacks_in_order() {
        let n = 200;
        let rows = fine_rows(&[profile("cpu", n, |i| 1 + i as i64)]);
        let [row] = &rows[..] else { panic!("{rows:?}") };
        assert_eq!((row.profiles, row.total), (1, (1..=n as i64).sum()));
        assert_eq!(row.ids.len(), n as usize);
        assert!(
            row.ids.windows(2).all(|w| w[0] < w[1]),
            "stacks in hash order"
        );
        let mut values = row.values.clone();
        values.sort_unstable();
        assert_eq!(values, (1..=n as i64).collect::<Vec<_>>());
        assert_eq!((row.sibling, row.ratio), (0, 0));
    }

    #[test]
    fn a_finest_row_that_is_a_multiple_of_its_siblings_stands_for_it() {
        // A Go CPU pprof: sample counts, and CPU time at 10 ms a sample.
        let samples = profile("cpu", 50, |i| 1 + i as i64 % 7);
        let cpu = profile("cpu_nanoseconds", 50, |i| (1 + i as i64 % 7) * 10_000_000);
        let rows = fine_rows(&[samples.clone(), cpu.clone()]);
        let by = |p: &Profile| rows.iter().find(|r| r.series == series_of(p)).unwrap();
        let (own, standing) = (by(&samples), by(&cpu));
        assert_eq!(own.ids.len(), 50);
        assert_eq!((own.sibling, own.ratio), (0, 0));
        assert!(standing.ids.is_empty() && standing.values.is_empty());
        assert_eq!(
            (standing.sibling, standing.ratio),
            (series_of(&samples), 10_000_000)
        );
        // Its counts stay its own; the two rows share one insert's id.
        assert_eq!((standing.profiles, standing.total), (1, cpu.total()));
        assert_eq!(standing.batch, own.batch);
        assert_ne!(own.batch, 0);
        // Coarse rows, in a bucket that starts at the same second, keep their arrays.
        assert_eq!(
            coarse_row_stacks(&[samples.clone(), cpu.clone()]),
            vec![50, 50]
        );
        // In the other order, the same row stands for the same one.
        let rows = fine_rows(&[cpu.clone(), samples.clone()]);
        let standing = rows.iter().find(|r| r.series == series_of(&cpu)).unwrap();
        assert_eq!(standing.sibling, series_of(&samples));
        // One value off: both rows hold their arrays.
        let mut off = cpu.clone();
        off.samples[3].value += 1;
        let rows = fine_rows(&[samples.clone(), off]);
        assert!(
            rows.iter().all(|r| r.sibling == 0 && r.ids.len() == 50),
            "{rows:?}"
        );
        // Different stacks (a profile of its own): no sibling.
        let other = profile("cpu_nanoseconds", 40, |i| (1 + i as i64 % 7) * 10_000_000);
        let rows = fine_rows(&[samples, other]);
        assert!(rows.iter().all(|r| r.sibling == 0), "{rows:?}");
    }
}
