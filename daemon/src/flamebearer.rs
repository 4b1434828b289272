//! Pyroscope's flamebearer JSON for `/render` (reference §4.4): levels of
//! `[x delta, total, self, name index]`, root `total` first, children after the parent's self,
//! ordered by name; nodes below the `maxNodes`-th largest total fold into one `other` per parent.

use kiln_plugin_api::Tree;
use rustc_hash::FxHashMap;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flamebearer {
    pub names: Vec<String>,
    pub levels: Vec<Vec<i64>>,
    pub num_ticks: i64,
    pub max_self: i64,
}

/// The total a node needs to be drawn on its own when at most `max_nodes` are kept.
fn threshold(tree: &Tree, max_nodes: usize) -> i64 {
    if max_nodes == 0 || tree.nodes.len() <= max_nodes {
        return i64::MIN;
    }
    let mut totals: Vec<i64> = tree.nodes.iter().map(|n| n.total).collect();
    let (_, nth, _) = totals.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
    *nth
}

pub fn flamebearer(tree: &Tree, max_nodes: usize) -> Flamebearer {
    let min_total = threshold(tree, max_nodes);
    let mut children = tree.children();
    for c in &mut children {
        c.sort_by(|&a, &b| tree.name_of(a).cmp(tree.name_of(b)));
    }
    let mut names = vec!["total".to_string()];
    let mut name_ids: FxHashMap<&str, i64> = FxHashMap::default();
    let mut levels: Vec<Vec<i64>> = Vec::new();
    let mut level_end: Vec<i64> = Vec::new();
    let mut max_self = 0;
    // (node or None for `other`, depth, x, total, self)
    let mut stack: Vec<(Option<u32>, usize, i64, i64, i64)> =
        vec![(Some(0), 0, 0, tree.total(), tree.nodes[0].self_value)];
    while let Some((node, depth, x, total, self_value)) = stack.pop() {
        if levels.len() <= depth {
            levels.push(Vec::new());
            level_end.push(0);
        }
        let name = match node {
            Some(0) => 0,
            Some(n) => {
                let s = tree.name_of(n);
                *name_ids.entry(s).or_insert_with(|| {
                    names.push(s.to_string());
                    names.len() as i64 - 1
                })
            }
            None => *name_ids.entry("other").or_insert_with(|| {
                names.push("other".to_string());
                names.len() as i64 - 1
            }),
        };
        levels[depth].extend_from_slice(&[x - level_end[depth], total, self_value, name]);
        level_end[depth] = x + total;
        max_self = max_self.max(self_value);
        let Some(node) = node else { continue };
        // Children go on the stack in reverse so they pop left to right.
        let mut child_x = x + self_value;
        let mut placed = Vec::new();
        let mut other = 0;
        for &c in &children[node as usize] {
            let n = tree.nodes[c as usize];
            if n.total == 0 {
                continue;
            }
            if n.total < min_total {
                other += n.total;
            } else {
                placed.push((Some(c), depth + 1, child_x, n.total, n.self_value));
                child_x += n.total;
            }
        }
        if other > 0 {
            placed.push((None, depth + 1, child_x, other, other));
        }
        stack.extend(placed.into_iter().rev());
    }
    Flamebearer {
        names,
        levels,
        num_ticks: tree.total(),
        max_self,
    }
}

/// The "double" flamebearer of a diff: both trees aligned so every node exists on both sides
/// (missing side = zeros), levels of `[xL, totalL, selfL, xR, totalR, selfR, name]`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlamebearerDiff {
    pub names: Vec<String>,
    pub levels: Vec<Vec<i64>>,
    pub num_ticks: i64,
    pub max_self: i64,
    pub left_ticks: i64,
    pub right_ticks: i64,
}

/// A node of the aligned tree: values on the left and right.
#[derive(Default, Clone, Copy)]
struct Pair {
    total: (i64, i64),
    self_value: (i64, i64),
}

pub fn flamebearer_diff(left: &Tree, right: &Tree, max_nodes: usize) -> FlamebearerDiff {
    // Align: one tree whose nodes carry both sides, keyed by (parent, name).
    let mut names: Vec<String> = vec!["total".into()];
    let mut name_ids: FxHashMap<String, u32> = FxHashMap::default();
    let mut nodes: Vec<(u32, u32, Pair)> = vec![(0, 0, Pair::default())];
    let mut edges: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    for (side, tree) in [(0, left), (1, right)] {
        let mut map = vec![0u32; tree.nodes.len()];
        for (i, n) in tree.nodes.iter().enumerate() {
            let id = if i == 0 {
                0
            } else {
                let name = tree.name_of(i as u32);
                let name = *name_ids.entry(name.to_string()).or_insert_with(|| {
                    names.push(name.to_string());
                    names.len() as u32 - 1
                });
                let parent = map[n.parent as usize];
                *edges.entry((parent, name)).or_insert_with(|| {
                    nodes.push((parent, name, Pair::default()));
                    nodes.len() as u32 - 1
                })
            };
            map[i] = id;
            let p = &mut nodes[id as usize].2;
            if side == 0 {
                p.total.0 += n.total;
                p.self_value.0 += n.self_value;
            } else {
                p.total.1 += n.total;
                p.self_value.1 += n.self_value;
            }
        }
    }
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate().skip(1) {
        children[n.0 as usize].push(i as u32);
    }
    for c in &mut children {
        c.sort_by(|&a, &b| {
            names[nodes[a as usize].1 as usize].cmp(&names[nodes[b as usize].1 as usize])
        });
    }
    let size = |id: u32| nodes[id as usize].2.total.0 + nodes[id as usize].2.total.1;
    let min_total = if max_nodes == 0 || nodes.len() <= max_nodes {
        i64::MIN
    } else {
        let mut totals: Vec<i64> = (0..nodes.len() as u32).map(size).collect();
        let (_, nth, _) = totals.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
        *nth
    };
    let other = names.len() as i64;
    let mut used_other = false;
    let mut levels: Vec<Vec<i64>> = Vec::new();
    let mut ends: Vec<(i64, i64)> = Vec::new();
    let mut max_self = 0;
    // (node or None for `other`, depth, xL, xR, values)
    let mut stack: Vec<(Option<u32>, usize, i64, i64, Pair)> = vec![(Some(0), 0, 0, 0, nodes[0].2)];
    while let Some((node, depth, xl, xr, v)) = stack.pop() {
        if levels.len() <= depth {
            levels.push(Vec::new());
            ends.push((0, 0));
        }
        let name = match node {
            Some(id) => i64::from(nodes[id as usize].1),
            None => {
                used_other = true;
                other
            }
        };
        levels[depth].extend_from_slice(&[
            xl - ends[depth].0,
            v.total.0,
            v.self_value.0,
            xr - ends[depth].1,
            v.total.1,
            v.self_value.1,
            name,
        ]);
        ends[depth] = (xl + v.total.0, xr + v.total.1);
        max_self = max_self.max(v.self_value.0).max(v.self_value.1);
        let Some(id) = node else { continue };
        let (mut cl, mut cr) = (xl + v.self_value.0, xr + v.self_value.1);
        let mut placed = Vec::new();
        let mut rest = Pair::default();
        for &c in &children[id as usize] {
            let cv = nodes[c as usize].2;
            if size(c) == 0 {
                continue;
            }
            if size(c) < min_total {
                rest.total.0 += cv.total.0;
                rest.total.1 += cv.total.1;
            } else {
                placed.push((Some(c), depth + 1, cl, cr, cv));
                cl += cv.total.0;
                cr += cv.total.1;
            }
        }
        if rest.total != (0, 0) {
            rest.self_value = rest.total;
            placed.push((None, depth + 1, cl, cr, rest));
        }
        stack.extend(placed.into_iter().rev());
    }
    if used_other {
        names.push("other".into());
    }
    let (left_ticks, right_ticks) = (left.total(), right.total());
    FlamebearerDiff {
        names,
        levels,
        num_ticks: left_ticks + right_ticks,
        max_self,
        left_ticks,
        right_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_example() {
        let t = Tree::from_stacks([(vec!["foo", "bar"], 100), (vec!["foo", "baz"], 200)]);
        let fb = flamebearer(&t, 0);
        let name = |i: i64| fb.names[i as usize].as_str();
        assert_eq!(fb.levels[0], vec![0, 300, 0, 0]);
        assert_eq!(fb.levels[1][..3], [0, 300, 0]);
        assert_eq!(name(fb.levels[1][3]), "foo");
        assert_eq!(fb.levels[2][..3], [0, 100, 100]);
        assert_eq!(name(fb.levels[2][3]), "bar");
        assert_eq!(fb.levels[2][4..7], [0, 200, 200]);
        assert_eq!(name(fb.levels[2][7]), "baz");
        assert_eq!((fb.num_ticks, fb.max_self), (300, 200));
    }

    #[test]
    fn diff_matches_the_reference_example() {
        let left = Tree::from_stacks([(vec!["foo", "bar"], 100)]);
        let right = Tree::from_stacks([(vec!["foo", "bar"], 50), (vec!["foo", "baz"], 50)]);
        let fb = flamebearer_diff(&left, &right, 0);
        let name = |i: i64| fb.names[i as usize].as_str();
        assert_eq!(fb.levels[0], vec![0, 100, 0, 0, 100, 0, 0]);
        assert_eq!(fb.levels[1][..6], [0, 100, 0, 0, 100, 0]);
        assert_eq!(name(fb.levels[1][6]), "foo");
        assert_eq!(fb.levels[2][..6], [0, 100, 100, 0, 50, 50]);
        assert_eq!(name(fb.levels[2][6]), "bar");
        assert_eq!(fb.levels[2][7..13], [0, 0, 0, 0, 50, 50]);
        assert_eq!(name(fb.levels[2][13]), "baz");
        assert_eq!(
            (fb.left_ticks, fb.right_ticks, fb.num_ticks, fb.max_self),
            (100, 100, 200, 100)
        );
    }

    #[test]
    fn truncation_folds_small_nodes_into_other() {
        let t = Tree::from_stacks([
            (vec!["a", "big"], 1000),
            (vec!["a", "s1"], 1),
            (vec!["a", "s2"], 2),
        ]);
        let fb = flamebearer(&t, 3);
        let level2: Vec<(i64, &str)> = fb.levels[2]
            .chunks(4)
            .map(|c| (c[1], fb.names[c[3] as usize].as_str()))
            .collect();
        assert_eq!(level2, vec![(1000, "big"), (3, "other")]);
        assert_eq!(fb.num_ticks, 1003);
    }
}
