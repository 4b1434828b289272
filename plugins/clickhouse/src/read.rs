//! Queries: the series index, one aggregation per merge or timeline, stacks resolved here.

use kiln_plugin_api::levels::timeline_step;
use kiln_plugin_api::{
    Aggregation, Frame, Labels, Merged, ProfileType, Query, Selector, SeriesInfo, StorageError,
    Tenant, Timeline, Tree, TreeBuilder,
};
use rustc_hash::FxHashMap;

use crate::client::{list, quote};
use crate::plan::{condition, plan};
use crate::rowbinary::RowReader;
use crate::{Inner, NS};

/// Series are found whose data may start this long before a range (the coarsest default
/// bucket), as the sled storage does.
const LOOKBACK_S: i64 = 100_000;

pub struct MatchedSeries {
    pub id: u64,
    pub service: String,
    pub info: SeriesInfo,
}

/// The answer of a query run on a scoped thread; a panic there is passed on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {e}"))
}

impl Inner {
    /// The series of `tenant` matching `selector` with data around `[start_ns, end_ns)`.
    pub(crate) fn matching_series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<MatchedSeries>, StorageError> {
        let service = selector
            .and_then(|s| s.service_name())
            .map(|s| format!(" AND service = {}", quote(s)))
            .unwrap_or_default();
        // Hour rows bound where a series has data: [first hour, last hour + 1 h).
        let first_before = end_ns.saturating_add(NS - 1).div_euclid(NS);
        let last_from = start_ns.div_euclid(NS) - LOOKBACK_S - 3600;
        let rows = self.client.query(&format!(
            "SELECT series, any(service), any(labels), any(profile_type), any(spy_name), \
             any(sample_rate) FROM {} WHERE tenant = {}{service} GROUP BY series \
             HAVING min(hour) < {first_before} AND max(hour) >= {last_from} FORMAT RowBinary",
            self.table("series"),
            quote(tenant.as_str()),
        ))?;
        let mut r = RowReader::new(&rows);
        let mut out = Vec::new();
        while !r.at_end() {
            let id = r.u64()?;
            let service = r.string()?;
            let labels: Labels =
                serde_json::from_str(&r.string()?).map_err(|e| corrupt("series labels", e))?;
            let profile_type: ProfileType =
                serde_json::from_str(&r.string()?).map_err(|e| corrupt("series type", e))?;
            let spy_name = r.string()?;
            let sample_rate = r.u32()?;
            if selector.is_some_and(|s| !s.matches(&labels, &profile_type)) {
                continue;
            }
            out.push(MatchedSeries {
                id,
                service,
                info: SeriesInfo {
                    labels,
                    profile_type,
                    spy_name,
                    sample_rate,
                },
            });
        }
        Ok(out)
    }

    /// `tenant = … AND service IN (…) AND series IN (…)`.
    fn series_filter(&self, tenant: &Tenant, series: &[MatchedSeries]) -> String {
        format!(
            "{} AND series IN ({})",
            self.services_filter(tenant, series),
            list(series.iter().map(|s| s.id))
        )
    }

    /// The tenant and services of `series`, as SQL.
    fn services_filter(&self, tenant: &Tenant, series: &[MatchedSeries]) -> String {
        let mut services: Vec<&str> = series.iter().map(|s| s.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        format!(
            "tenant = {} AND service IN ({})",
            quote(tenant.as_str()),
            services
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// The values of finest rows in `plan` that stand for a sibling's row (`schema`'s
    /// `SIBLING`): the sibling's arrays of the same insert and bucket, times the ratio, as a
    /// query of `(stack, value)` to add to the merge's. `None` when the plan reads no finest rows.
    fn sibling_values(
        &self,
        tenant: &Tenant,
        series: &[MatchedSeries],
        plan: &[(usize, i64, i64)],
    ) -> Option<String> {
        let finest: Vec<_> = plan.iter().copied().filter(|p| p.0 == 0).collect();
        if finest.is_empty() {
            return None;
        }
        let fine = self.table("fine");
        let in_range = condition(&finest);
        let standing_for = format!(
            "FROM {fine} WHERE {} AND {in_range} AND sibling != 0",
            self.series_filter(tenant, series)
        );
        // Every stack of a sibling's row joins every distinct row standing for it (`ALL`: on
        // current servers `ANY INNER JOIN` keeps one row per key of either side, so one
        // stack). DISTINCT keeps a row stored twice from counting twice over. The inner select
        // keeps `series` out of the outer one's aliases, which its filter would otherwise read.
        // The joined select is named: current servers refuse an unnamed one.
        Some(format!(
            "SELECT stacksMap.stack AS stack, stacksMap.value * scale AS value FROM {fine} \
             ARRAY JOIN stacksMap ALL INNER JOIN (SELECT DISTINCT sibling AS series, bucket, \
             batch, scale, standing FROM (SELECT sibling, bucket, batch, ratio AS scale, \
             series AS standing {standing_for})) AS standing_rows \
             USING (series, bucket, batch) WHERE {} AND {in_range} AND series IN \
             (SELECT sibling {standing_for})",
            self.services_filter(tenant, series)
        ))
    }

    pub(crate) fn select_merge(
        &self,
        tenant: &Tenant,
        q: &Query,
        now_s: i64,
    ) -> Result<Merged, StorageError> {
        let series = self.matching_series(tenant, Some(&q.selector), q.start_ns, q.end_ns)?;
        if series.is_empty() {
            return Ok(Merged::default());
        }
        let plan = plan(
            &self.levels,
            q.start_ns.div_euclid(NS),
            q.end_ns.saturating_add(NS - 1).div_euclid(NS),
            now_s,
        );
        let filter = format!(
            "{} AND {}",
            self.series_filter(tenant, &series),
            condition(&plan)
        );
        // The merge: one aggregation, the sum of each stack over the range, from the arrays of
        // the buckets' rows; the count of profiles beside it, on its own connection.
        let (rows, profile_rows) = std::thread::scope(|scope| {
            let profiles = scope.spawn(|| {
                self.client.query(&format!(
                    "SELECT toUInt64(sum(profiles)) FROM {} WHERE {filter} FORMAT RowBinary",
                    self.table("all_buckets")
                ))
            });
            let own = format!(
                "SELECT stacksMap.stack AS stack, stacksMap.value AS value FROM {} \
                 ARRAY JOIN stacksMap WHERE {filter}",
                self.table("all_buckets")
            );
            let values = match self.sibling_values(tenant, &series, &plan) {
                Some(siblings) => format!("{own} UNION ALL {siblings}"),
                None => own,
            };
            let merged = self.client.query(&format!(
                "SELECT stack, sum(value) AS v FROM ({values}) GROUP BY stack HAVING v != 0 \
                 FORMAT RowBinary"
            ));
            (merged, join(profiles))
        });
        let mut values: Vec<(u64, i64)> = Vec::new();
        let rows = rows?;
        let mut r = RowReader::new(&rows);
        while !r.at_end() {
            values.push((r.u64()?, r.i64()?));
        }
        let profile_rows = profile_rows?;
        let mut r = RowReader::new(&profile_rows);
        let profiles = if r.at_end() { 0 } else { r.u64()? };
        let services: Vec<String> = {
            let mut s: Vec<String> = series.iter().map(|s| s.service.clone()).collect();
            s.sort_unstable();
            s.dedup();
            s
        };
        let tree = self.resolve(tenant, &services, &values)?;
        Ok(Merged {
            tree,
            profiles,
            series: series.len() as u64,
            pruned_nodes: 0,
        })
    }

    /// Builds the tree of `(stack id, value)` from the stacks and frames tables.
    fn resolve(
        &self,
        tenant: &Tenant,
        services: &[String],
        values: &[(u64, i64)],
    ) -> Result<Tree, StorageError> {
        if values.is_empty() {
            return Ok(Tree::default());
        }
        let where_service = format!(
            "tenant = {} AND service IN ({})",
            quote(tenant.as_str()),
            services
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(",")
        );
        let stack_ids = list(values.iter().map(|v| v.0));
        // Stacks and their frames at once: the frames query finds its ids from the stacks
        // table itself rather than waiting for the first answer.
        let (stack_rows, frame_rows) = std::thread::scope(|scope| {
            let frames = scope.spawn(|| {
                self.client.query(&format!(
                    "SELECT frame, any(function), any(file), any(line), any(start_line) FROM {} \
                     WHERE {where_service} AND frame IN (SELECT arrayJoin(frames) FROM {} \
                     WHERE {where_service} AND stack IN ({stack_ids})) GROUP BY frame \
                     FORMAT RowBinary",
                    self.table("frames"),
                    self.table("stacks"),
                ))
            });
            let stacks = self.client.query(&format!(
                "SELECT stack, any(frames) FROM {} WHERE {where_service} AND stack IN ({stack_ids}) \
                 GROUP BY stack FORMAT RowBinary",
                self.table("stacks"),
            ));
            (stacks, join(frames))
        });
        let mut stacks: FxHashMap<u64, Vec<u64>> = FxHashMap::default();
        let stack_rows = stack_rows?;
        let mut r = RowReader::new(&stack_rows);
        while !r.at_end() {
            let id = r.u64()?;
            stacks.insert(id, r.array_u64()?);
        }
        let mut frames: FxHashMap<u64, Frame> = FxHashMap::default();
        let frame_rows = frame_rows?;
        let mut r = RowReader::new(&frame_rows);
        while !r.at_end() {
            let id = r.u64()?;
            frames.insert(
                id,
                Frame {
                    function: r.string()?,
                    file: r.string()?,
                    line: r.u32()?,
                    start_line: r.u32()?,
                },
            );
        }
        let mut resolved: Vec<(Vec<&Frame>, i64)> = Vec::with_capacity(values.len());
        for &(stack, value) in values {
            let ids = stacks
                .get(&stack)
                .ok_or_else(|| StorageError::Corrupt(format!("stack {stack:016x} is unknown")))?;
            let path = ids
                .iter()
                .map(|f| {
                    frames
                        .get(f)
                        .ok_or_else(|| StorageError::Corrupt(format!("frame {f:016x} is unknown")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            resolved.push((path, value));
        }
        // Children in name order, whatever order ClickHouse answered in.
        resolved.sort_by(|a, b| {
            let names_a = a.0.iter().map(|f| f.function.as_str());
            names_a.cmp(b.0.iter().map(|f| f.function.as_str()))
        });
        let with_lines = frames
            .values()
            .any(|f| !f.file.is_empty() || f.line != 0 || f.start_line != 0);
        let mut b = TreeBuilder::default();
        for (path, value) in resolved {
            let mut node = 0;
            for f in path {
                let name = b.intern(&f.function);
                node = if with_lines {
                    b.child_at(node, name, &f.file, f.line, f.start_line)
                } else {
                    b.child(node, name)
                };
            }
            b.add_self(node, value);
        }
        Ok(b.build())
    }

    pub(crate) fn select_timeline(
        &self,
        tenant: &Tenant,
        q: &Query,
        step_ns: i64,
        group_by: Option<&str>,
        now_s: i64,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        // As sled answers: at a level within ten times of the step ([`timeline_step`]).
        let range_s = (q.end_ns - q.start_ns) / NS;
        let step_s = timeline_step(&self.levels, (step_ns / NS).max(1), range_s);
        let start_s = q.start_ns.div_euclid(NS).div_euclid(step_s) * step_s;
        let end_s = q.end_ns.saturating_add(NS - 1).div_euclid(NS);
        let points = ((end_s - start_s + step_s - 1) / step_s).max(1) as usize;
        let series = self.matching_series(tenant, Some(&q.selector), q.start_ns, q.end_ns)?;
        let mut out: FxHashMap<String, Vec<i64>> = FxHashMap::default();
        if !series.is_empty() {
            // The coarsest level no coarser than the step, then coarser ones for older data.
            let first = self
                .levels
                .iter()
                .rposition(|&(res, _)| res as i64 <= step_s)
                .unwrap_or(0);
            let mut ranges = Vec::new();
            let mut covered_until = end_s;
            for level in first..self.levels.len() {
                let (res, retention) = self.levels[level];
                let from = if level + 1 == self.levels.len() {
                    start_s
                } else {
                    start_s.max(now_s - retention as i64)
                };
                if from < covered_until {
                    ranges.push((
                        level,
                        from.div_euclid(res as i64) * res as i64,
                        covered_until,
                    ));
                }
                covered_until = covered_until.min(from);
                if covered_until <= start_s {
                    break;
                }
            }
            let rows = self.client.query(&format!(
                "SELECT series, bucket, toUInt64(sum(profiles)), sum(total) FROM {} WHERE {} AND {} \
                 GROUP BY series, level, bucket FORMAT RowBinary",
                self.table("all_buckets"),
                self.series_filter(tenant, &series),
                condition(&ranges)
            ))?;
            let by_id: FxHashMap<u64, &MatchedSeries> = series.iter().map(|s| (s.id, s)).collect();
            let mut r = RowReader::new(&rows);
            while !r.at_end() {
                let (id, bucket, profiles, total) = (r.u64()?, r.i64()?, r.u64()?, r.i64()?);
                let Some(s) = by_id.get(&id) else { continue };
                let group = group_by
                    .map(|g| s.info.labels.get(g).unwrap_or("").to_string())
                    .unwrap_or_default();
                let line = out.entry(group).or_insert_with(|| vec![0; points]);
                let average = s.info.profile_type.aggregation == Aggregation::Average;
                let value = if average && profiles > 0 {
                    total / profiles as i64
                } else {
                    total
                };
                let i = ((bucket.max(start_s) - start_s) / step_s) as usize;
                if i < points {
                    line[i] += value;
                }
            }
            // A matched series without data in range still gets its (empty) line.
            for s in &series {
                let group = group_by
                    .map(|g| s.info.labels.get(g).unwrap_or("").to_string())
                    .unwrap_or_default();
                out.entry(group).or_insert_with(|| vec![0; points]);
            }
        }
        let mut out: Vec<(String, Timeline)> = out
            .into_iter()
            .map(|(g, points)| {
                (
                    g,
                    Timeline {
                        start_ns: start_s * NS,
                        step_ns: step_s * NS,
                        points,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
