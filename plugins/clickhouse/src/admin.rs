//! Deletes, retention by age and by size, and what the data takes on disk.

use std::time::{Duration, Instant};

use kiln_plugin_api::{RetentionReport, StorageError, Tenant};
use rustc_hash::FxHashMap;

use crate::client::quote;
use crate::rowbinary::RowReader;
use crate::Inner;

const DAY: i64 = 86_400;

/// The tables partitioned by `(level, day)`: the coarse levels' and the finest level's.
const LEVELED: [&str; 2] = ["buckets", "fine"];

/// One partition of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    table: String,
    /// As `system.parts` spells it, which `DROP PARTITION` takes back: `(0,20500)`, `20500`.
    literal: String,
    level: Option<u8>,
    day: i64,
    bytes: u64,
}

fn parse_partition(table: String, literal: String, bytes: u64) -> Option<Partition> {
    let inner = literal.trim_start_matches('(').trim_end_matches(')');
    let (level, day) = match inner.split_once(',') {
        Some((l, d)) => (Some(l.trim().parse().ok()?), d.trim().parse().ok()?),
        None => (None, inner.trim().parse().ok()?),
    };
    Some(Partition {
        table,
        literal,
        level,
        day,
        bytes,
    })
}

impl Inner {
    /// Bytes on disk of every active part of the database's tables.
    pub(crate) fn database_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.partitions()?.iter().map(|p| p.bytes).sum())
    }

    fn partitions(&self) -> Result<Vec<Partition>, StorageError> {
        let rows = self.client.query(&format!(
            "SELECT table, partition, toUInt64(sum(bytes_on_disk)) FROM system.parts \
             WHERE database = {} AND active GROUP BY table, partition FORMAT RowBinary",
            quote(&self.db)
        ))?;
        let mut r = RowReader::new(&rows);
        let mut out = Vec::new();
        while !r.at_end() {
            let (table, literal, bytes) = (r.string()?, r.string()?, r.u64()?);
            if let Some(p) = parse_partition(table, literal, bytes) {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn drop_partition(&self, p: &Partition) -> Result<(), StorageError> {
        self.client.execute(&format!(
            "ALTER TABLE {} DROP PARTITION {}",
            self.table(&p.table),
            p.literal
        ))?;
        Ok(())
    }

    /// Drops the day partitions wholly older than each level's retention (the series index
    /// with the longest). Data lives up to a day past its retention: partitions are by day.
    pub(crate) fn enforce_retention(&self, now_s: i64) -> Result<RetentionReport, StorageError> {
        let longest = self
            .levels
            .iter()
            .map(|&(res, keep)| (res + keep) as i64)
            .max()
            .unwrap_or(0);
        let mut report = RetentionReport::default();
        for p in self.partitions()? {
            let kept_for = match (p.table.as_str(), p.level) {
                (t, Some(l)) if LEVELED.contains(&t) => match self.levels.get(l as usize) {
                    Some(&(res, keep)) => (res + keep) as i64,
                    None => continue,
                },
                ("series", None) => longest,
                _ => continue,
            };
            if (p.day + 1) * DAY <= now_s - kept_for {
                self.drop_partition(&p)?;
                report.chunks_deleted += 1;
            }
        }
        let collected = self.collect_dictionaries()?;
        if collected > 0 {
            tracing::info!(
                rows = collected,
                "deleted the frames and stacks of services with no data left"
            );
        }
        Ok(report)
    }

    /// Deletes the frames and stacks of services that have no series and no buckets left
    /// (deleted, or past retention), among the rows inserted at least
    /// `dictionary_collect_after` ago. A daemon still writing such a service inserts its frames
    /// and stacks again within a third of that ([`crate::write::Known`]), so what it counts on
    /// is always newer than what goes. Returns the rows deleted.
    pub(crate) fn collect_dictionaries(&self) -> Result<u64, StorageError> {
        let (frames, stacks, series, buckets) = (
            self.table("frames"),
            self.table("stacks"),
            self.table("series"),
            self.table("all_buckets"),
        );
        let rows = self.client.query(&format!(
            "SELECT DISTINCT tenant, service FROM \
             (SELECT tenant, service FROM {frames} UNION ALL SELECT tenant, service FROM {stacks}) \
             WHERE (tenant, service) NOT IN (SELECT DISTINCT tenant, service FROM {series}) \
             AND (tenant, service) NOT IN (SELECT DISTINCT tenant, service FROM {buckets}) \
             FORMAT RowBinary"
        ))?;
        let mut r = RowReader::new(&rows);
        let mut orphans = Vec::new();
        while !r.at_end() {
            orphans.push(format!(
                "(tenant = {} AND service = {})",
                quote(&r.string()?),
                quote(&r.string()?)
            ));
        }
        let old_enough = format!(
            "inserted < now() - {}",
            self.config.dictionary_collect_after.as_secs()
        );
        let mut deleted = 0;
        // A mutation rewrites the parts it touches: one per table for many services, and none
        // when nothing is old enough yet (retention passes come back for the rest).
        for services in orphans.chunks(256) {
            let filter = format!("{old_enough} AND ({})", services.join(" OR "));
            for table in [&frames, &stacks] {
                let n = self.count_rows(table, &filter)?;
                if n > 0 {
                    self.client
                        .execute(&format!("ALTER TABLE {table} DELETE WHERE {filter}"))?;
                    deleted += n;
                }
            }
        }
        if deleted > 0 {
            self.wait_for_mutations()?;
        }
        Ok(deleted)
    }

    /// Oldest day partitions first, finest level first, until the database fits `max_bytes`.
    pub(crate) fn enforce_max_bytes(&self, max_bytes: u64) -> Result<u64, StorageError> {
        let mut dropped = 0;
        loop {
            let parts = self.partitions()?;
            let total: u64 = parts.iter().map(|p| p.bytes).sum();
            if total <= max_bytes {
                return Ok(dropped);
            }
            let Some(oldest) = parts
                .iter()
                .filter(|p| LEVELED.contains(&p.table.as_str()))
                .filter_map(|p| Some((p.level?, p.day)))
                .min()
            else {
                return Ok(dropped);
            };
            for p in parts
                .iter()
                .filter(|p| (p.level, p.day) == (Some(oldest.0), oldest.1))
            {
                self.drop_partition(p)?;
                dropped += 1;
            }
        }
    }

    /// Deletes the series and values of `service` of `tenant` (frames and stacks stay: other
    /// daemons may hold them as already written). Waits until ClickHouse has applied it.
    pub(crate) fn delete_service(
        &self,
        tenant: &Tenant,
        service: &str,
    ) -> Result<u64, StorageError> {
        let filter = format!(
            "tenant = {} AND service = {}",
            quote(tenant.as_str()),
            quote(service)
        );
        let deleted = self.count_rows(&self.table("all_buckets"), &filter)?;
        for table in ["series", "buckets", "fine"] {
            self.client.execute(&format!(
                "ALTER TABLE {} DELETE WHERE {filter}",
                self.table(table)
            ))?;
        }
        self.wait_for_mutations()?;
        Ok(deleted)
    }

    /// Rows of `table` (`database.table`) that match `filter`.
    fn count_rows(&self, table: &str, filter: &str) -> Result<u64, StorageError> {
        let rows = self.client.query(&format!(
            "SELECT toUInt64(count()) FROM {table} WHERE {filter} FORMAT RowBinary"
        ))?;
        let mut r = RowReader::new(&rows);
        Ok(if r.at_end() { 0 } else { r.u64()? })
    }

    /// Deletes are mutations, applied in the background (old servers have no `mutations_sync`):
    /// wait until none of this database is pending.
    fn wait_for_mutations(&self) -> Result<(), StorageError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut delay = Duration::from_millis(10);
        let pending = format!("database = {} AND is_done = 0", quote(&self.db));
        loop {
            if self.count_rows("system.mutations", &pending)? == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StorageError::Io(format!(
                    "ClickHouse has not finished deleting after {:?}; it will, in the background",
                    self.config.timeout
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Bytes per tenant, service and level, apportioned by each one's share of the rows.
    pub(crate) fn usage_rows(&self) -> Result<Vec<(String, String, String, u64)>, StorageError> {
        // Bytes of each level (the leveled tables), of the series index, and of the dictionary.
        let mut bytes: FxHashMap<String, u64> = FxHashMap::default();
        for p in self.partitions()? {
            let key = match (p.table.as_str(), p.level) {
                (t, Some(l)) if LEVELED.contains(&t) => self.level_name(l),
                ("series", _) => "index".to_string(),
                ("frames" | "stacks", _) => "dictionary".to_string(),
                _ => continue,
            };
            *bytes.entry(key).or_default() += p.bytes;
        }
        let mut rows: Vec<(String, String, String, u64)> = Vec::new();
        let queries = [
            ("all_buckets", "toString(level)"),
            ("series", "'index'"),
            ("frames", "'dictionary'"),
            ("stacks", "'dictionary'"),
        ];
        for (table, level) in queries {
            let answer = self.client.query(&format!(
                "SELECT tenant, service, {level}, toUInt64(count()) FROM {} \
                 GROUP BY tenant, service, {level} FORMAT RowBinary",
                self.table(table)
            ))?;
            let mut r = RowReader::new(&answer);
            while !r.at_end() {
                let (t, s, l, n) = (r.string()?, r.string()?, r.string()?, r.u64()?);
                let l = match l.parse::<u8>() {
                    Ok(level) => self.level_name(level),
                    Err(_) => l,
                };
                rows.push((t, s, l, n));
            }
        }
        let mut per_level_rows: FxHashMap<String, u64> = FxHashMap::default();
        let mut per_key: FxHashMap<(String, String, String), u64> = FxHashMap::default();
        for (t, s, l, n) in rows {
            *per_level_rows.entry(l.clone()).or_default() += n;
            *per_key.entry((t, s, l)).or_default() += n;
        }
        let mut out: Vec<(String, String, String, u64)> = per_key
            .into_iter()
            .map(|((t, s, l), n)| {
                let total_rows = per_level_rows.get(&l).copied().unwrap_or(1).max(1);
                let level_bytes = bytes.get(&l).copied().unwrap_or(0);
                let share = (level_bytes as u128 * n as u128 / total_rows as u128) as u64;
                (t, s, l, share)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn level_name(&self, level: u8) -> String {
        match self.levels.get(level as usize) {
            Some(&(res, _)) => format!("{res}s"),
            None => format!("level {level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partition_literals() {
        let p = parse_partition("samples".into(), "(1,20500)".into(), 5).unwrap();
        assert_eq!((p.level, p.day), (Some(1), 20500));
        let p = parse_partition("series".into(), "20500".into(), 5).unwrap();
        assert_eq!((p.level, p.day), (None, 20500));
        assert!(parse_partition("frames".into(), "tuple()".into(), 5).is_none());
    }
}
