//! Which level's buckets answer a time range: coarse buckets where they fit wholly inside it,
//! finer ones at the edges while those are still kept. The same plan as the sled storage, so
//! both answer a range identically.

/// `(level, first bucket, end)` in seconds, coarsest first. `levels` holds `(resolution,
/// retention)` in seconds, finest first.
pub fn plan(levels: &[(u64, u64)], start_s: i64, end_s: i64, now_s: i64) -> Vec<(usize, i64, i64)> {
    let mut out = Vec::new();
    plan_level(levels, levels.len() - 1, start_s, end_s, now_s, &mut out);
    out
}

fn plan_level(
    levels: &[(u64, u64)],
    level: usize,
    start_s: i64,
    end_s: i64,
    now_s: i64,
    out: &mut Vec<(usize, i64, i64)>,
) {
    if start_s >= end_s {
        return;
    }
    let res = levels[level].0 as i64;
    if level == 0 {
        out.push((0, start_s.div_euclid(res) * res, end_s));
        return;
    }
    let a = start_s.div_euclid(res) * res + if start_s.rem_euclid(res) == 0 { 0 } else { res };
    let b = end_s.div_euclid(res) * res;
    if a >= b {
        plan_level(levels, level - 1, start_s, end_s, now_s, out);
        return;
    }
    out.push((level, a, b));
    let finer_from = now_s - levels[level - 1].1 as i64;
    if start_s < a {
        if start_s >= finer_from {
            plan_level(levels, level - 1, start_s, a, now_s, out);
        } else {
            out.push((level, a - res, a));
        }
    }
    if b < end_s {
        if b >= finer_from {
            plan_level(levels, level - 1, b, end_s, now_s, out);
        } else {
            out.push((level, b, b + res));
        }
    }
}

/// The SQL condition selecting the rows of `plan`.
pub fn condition(plan: &[(usize, i64, i64)]) -> String {
    if plan.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = plan
        .iter()
        .map(|&(l, a, b)| format!("(level = {l} AND bucket >= {a} AND bucket < {b})"))
        .collect();
    format!("({})", parts.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ranges_read_coarse_buckets_and_fine_edges() {
        let levels = [(10, 86_400), (100, 86_400 * 14), (1000, 86_400 * 30)];
        let now = 1_000_000;
        let p = plan(&levels, now - 5000 + 5, now, now);
        assert_eq!(p[0], (2, now - 4000, now));
        assert!(p.iter().any(|&(l, _, _)| l == 0), "{p:?}");
        // Every second of the range is covered exactly once.
        let mut covered = 0;
        for &(l, a, b) in &p {
            let _ = l;
            covered += b.min(now) - a.max(now - 5000 + 5);
        }
        assert_eq!(covered, 4995);
        assert_eq!(condition(&[]), "0");
    }
}
