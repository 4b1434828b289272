//! A merge's tree: the stack values a query summed, by dictionary node, become the tree it
//! answers, pruned to the query budget.
//!
//! A churning service's dictionary can hold tens of millions of nodes, most with a value in a
//! long range, so the working set is kept to a few bytes per node: the summed values are turned
//! into subtree totals in place, the parents read once go into one `u32` per node, two bitsets
//! mark what is wanted and kept, and the cut between kept and folded nodes is found by radix
//! selection over the totals instead of a sorted copy. Only the kept nodes (at most the budget's
//! worth) get more than that.

use kiln_plugin_api::{SourceLine, StorageError, Tree, TreeNode};
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap;

use crate::dict::{self, Disk, ServiceDict};

/// A bitset over node ids.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// Builds the tree of the nodes with a value and their ancestors; past `max_nodes`, the nodes
/// with the smallest totals are folded into an `other` child of their nearest kept ancestor.
/// `values` holds each node's own (self) value by id; it is consumed as the totals' storage.
/// Returns the tree and how many nodes were folded.
///
/// Reads only the dictionary blocks those nodes are in. A stack may have been written under
/// two ids (its lookup entry had left memory, see [`crate::lookup`]): nodes with the same frame
/// under the same tree node are one node of the tree.
pub(crate) fn build_tree(
    dict: &mut ServiceDict,
    disk: Disk<'_>,
    uses: u64,
    mut values: Vec<i64>,
    max_nodes: usize,
    page_limit: usize,
) -> Result<(Tree, u64), StorageError> {
    let n = dict.node_count();
    if values.len() > n {
        return Err(StorageError::Corrupt(format!(
            "a chunk references stack {} but the service has {n}",
            values.len() - 1
        )));
    }
    let n = values.len();
    let root_value = values.first().copied().unwrap_or(0);
    // A parent's id is below its children's, so one sweep from the highest id down sees every
    // node after all of its descendants: each node's value becomes its subtree's total, and a
    // node is wanted when it has a value or a wanted descendant.
    let mut wanted = Bits::new(n);
    let mut parents = vec![0u32; n];
    let mut wanted_count = 0usize;
    for id in (1..n).rev() {
        if values[id] == 0 && !wanted.get(id) {
            continue;
        }
        wanted.set(id);
        wanted_count += 1;
        let (parent, _) = dict.node_at(disk, id as u32, uses)?;
        parents[id] = parent;
        if parent != 0 {
            values[parent as usize] += values[id];
            wanted.set(parent as usize);
        }
        dict.trim_pages(page_limit);
    }
    let totals = values;
    let threshold = if wanted_count > max_nodes {
        let cut = max_nodes.saturating_sub(1);
        nth_largest(
            wanted_ids(&wanted, n).map(|id| totals[id].unsigned_abs()),
            cut,
        )
    } else {
        0
    };
    // Over budget: keep the `max_nodes` largest subtrees (a parent's total is at least its
    // child's, so what is kept stays connected), fold the others into `other`. In id order, a
    // parent is decided before its children. The kept ids are ascending, so a kept node's index
    // is found by binary search; `children` sums its wanted children's totals, from which its
    // own value is recovered.
    let mut kept = Bits::new(n);
    let mut kept_ids: Vec<u32> = Vec::new();
    let mut children = Vec::new();
    let mut other: FxHashMap<u32, i64> = FxHashMap::default();
    let mut pruned = 0u64;
    let index = |kept_ids: &[u32], id: u32| kept_ids.binary_search(&id).expect("kept parent");
    for id in wanted_ids(&wanted, n) {
        let parent = parents[id];
        let parent_kept = parent == 0 || kept.get(parent as usize);
        let t = totals[id];
        let keep = wanted_count <= max_nodes
            || (parent_kept
                && (t.unsigned_abs() > threshold
                    || (t.unsigned_abs() == threshold && kept_ids.len() < max_nodes)));
        if parent != 0 && parent_kept {
            children[index(&kept_ids, parent)] += t;
        }
        if keep {
            kept.set(id);
            kept_ids.push(id as u32);
            children.push(0i64);
        } else {
            if parent_kept {
                *other.entry(parent).or_default() += t;
            }
            pruned += 1;
        }
    }
    drop(kept);
    drop(wanted);
    let self_value = |i: usize| totals[kept_ids[i] as usize] - children[i];

    // The frame of each kept node as (function, file, line, start line), the names and files
    // going straight into the tree, each once. Two stored frames of the same content are one
    // frame here (a frame may have two ids too).
    let mut tree = Tree::default();
    tree.nodes[0].self_value = root_value;
    tree.files.push(String::new());
    let (mut names, mut files) = (Interner::default(), Interner::default());
    let mut located = false;
    let mut frames = Vec::with_capacity(kept_ids.len());
    let mut frame_of: FxHashMap<u32, u32> = FxHashMap::default();
    let mut form_ids: FxHashMap<(u32, u32, u32, u32), u32> = FxHashMap::default();
    let mut forms: Vec<(u32, u32, u32, u32)> = Vec::new();
    for &id in &kept_ids {
        let (_, frame) = dict.node_at(disk, id, uses)?;
        dict.trim_pages(page_limit);
        let k = match frame_of.get(&frame) {
            Some(&k) => k,
            None => {
                let key = dict.frame_at(disk, frame, uses)?;
                located |= dict::is_located(key);
                let f = dict::split_frame_key(key);
                let form = (
                    names.intern(&mut tree.names, f.function),
                    match f.file {
                        "" => 0,
                        file => files.intern(&mut tree.files, file),
                    },
                    f.line,
                    f.start_line,
                );
                let k = *form_ids.entry(form).or_insert_with(|| {
                    forms.push(form);
                    forms.len() as u32 - 1
                });
                frame_of.insert(frame, k);
                k
            }
        };
        frames.push(k);
    }
    drop((frame_of, form_ids, names, files));
    // Frames are function names, or (function, file, line) since lines are kept: the tree has
    // lines when one of its frames has a location (see `Tree::by_function` for the grouped view).
    if located {
        tree.lines.push(SourceLine::default());
    } else {
        tree.files.clear();
    }
    // Tree node of each kept node, and of each (tree parent, frame).
    let mut tree_of: Vec<u32> = vec![0; kept_ids.len()];
    let mut by_frame: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    let tree_parent_of = |tree_of: &[u32], parent: u32| {
        if parent == 0 {
            0
        } else {
            tree_of[index(&kept_ids, parent)]
        }
    };
    for (i, &id) in kept_ids.iter().enumerate() {
        let tree_parent = tree_parent_of(&tree_of, parents[id as usize]);
        let k = frames[i];
        if let Some(&same) = by_frame.get(&(tree_parent, k)) {
            tree_of[i] = same;
            tree.nodes[same as usize].self_value += self_value(i);
            continue;
        }
        let (name, file, line, start_line) = forms[k as usize];
        let node = tree.nodes.len() as u32;
        tree_of[i] = node;
        by_frame.insert((tree_parent, k), node);
        tree.nodes.push(TreeNode {
            parent: tree_parent,
            name,
            self_value: self_value(i),
            total: 0,
        });
        if located {
            tree.lines.push(SourceLine {
                file,
                line,
                start_line,
            });
        }
    }
    if !other.is_empty() {
        let name = tree.names.len() as u32;
        tree.names.push("other".to_string());
        let mut folded: FxHashMap<u32, i64> = FxHashMap::default();
        for (parent, v) in other {
            *folded.entry(tree_parent_of(&tree_of, parent)).or_default() += v;
        }
        let mut folded: Vec<(u32, i64)> = folded.into_iter().collect();
        folded.sort_unstable();
        for (parent, value) in folded {
            tree.nodes.push(TreeNode {
                parent,
                name,
                self_value: value,
                total: 0,
            });
            if located {
                tree.lines.push(SourceLine::default());
            }
        }
    }
    tree.compute_totals();
    Ok((tree, pruned))
}

/// Strings stored once, in the table they are interned into, found again by their hash.
#[derive(Default)]
struct Interner {
    by_hash: FxHashMap<u64, u32>,
    /// Strings whose hash another string had first (rare).
    collided: FxHashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, table: &mut Vec<String>, s: &str) -> u32 {
        let hash = {
            let mut h = rustc_hash::FxHasher::default();
            s.hash(&mut h);
            h.finish()
        };
        let push = |table: &mut Vec<String>| {
            table.push(s.to_string());
            table.len() as u32 - 1
        };
        match self.by_hash.entry(hash) {
            Entry::Vacant(e) => *e.insert(push(table)),
            Entry::Occupied(e) if table[*e.get() as usize] == s => *e.get(),
            Entry::Occupied(_) => match self.collided.get(s) {
                Some(&id) => id,
                None => {
                    let id = push(table);
                    self.collided.insert(s.to_string(), id);
                    id
                }
            },
        }
    }
}

/// The wanted node ids, ascending (the root, 0, is not among them).
fn wanted_ids(wanted: &Bits, n: usize) -> impl Iterator<Item = usize> + Clone + '_ {
    (1..n).filter(|&id| wanted.get(id))
}

/// The value of rank `k` (0 is the largest) among those `values` yields, found by radix
/// selection: eight passes over `values`, a byte of the answer fixed per pass, no copy of them.
/// 0 when there are not more than `k` values.
fn nth_largest<I: Iterator<Item = u64> + Clone>(values: I, mut k: usize) -> u64 {
    let mut prefix = 0u64;
    for pass in 0..8 {
        let shift = 56 - 8 * pass;
        // Only values whose bytes above this one are the prefix found so far take part.
        let high = if pass == 0 { 0 } else { !0u64 << (shift + 8) };
        let mut counts = [0usize; 256];
        for v in values.clone().filter(|v| v & high == prefix) {
            counts[((v >> shift) & 0xff) as usize] += 1;
        }
        let mut digit = None;
        for d in (0..256).rev() {
            if k < counts[d] {
                digit = Some(d as u64);
                break;
            }
            k -= counts[d];
        }
        let Some(d) = digit else { return 0 };
        prefix |= d << shift;
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_selection_finds_each_rank() {
        let values: Vec<u64> = vec![5, 1 << 40, 3, 5, u64::MAX, 0, (1 << 40) + 1, 7, 5, 255, 256];
        let mut sorted = values.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for (k, &expected) in sorted.iter().enumerate() {
            assert_eq!(nth_largest(values.iter().copied(), k), expected, "rank {k}");
        }
        assert_eq!(nth_largest(values.iter().copied(), values.len()), 0);
        assert_eq!(nth_largest(std::iter::empty(), 0), 0);
    }
}
