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
