//! Grafana Pyroscope's serialized tree (`PROFILE_FORMAT_TREE`): depth first from a virtual
//! root, each node as uvarint name length, name bytes, uvarint self value, uvarint number of
//! children. Children below the `max_nodes`-th largest total fold into one `other` per parent.

use kiln_plugin_api::Tree;

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn node(out: &mut Vec<u8>, name: &str, self_value: i64, children: usize) {
    uvarint(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    uvarint(out, self_value.max(0) as u64);
    uvarint(out, children as u64);
}

pub fn encode(tree: &Tree, max_nodes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if tree.total() == 0 {
        return out;
    }
    let min_total = if max_nodes == 0 || tree.nodes.len() <= max_nodes {
        i64::MIN
    } else {
        let mut totals: Vec<i64> = tree.nodes.iter().map(|n| n.total).collect();
        let (_, nth, _) = totals.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
        *nth
    };
    let children = tree.children();
    // (node, or None for a folded `other` with its value)
    let mut stack: Vec<(Option<u32>, i64)> = vec![(Some(0), 0)];
    let mut first = true;
    while let Some((n, other_value)) = stack.pop() {
        let Some(n) = n else {
            node(&mut out, "other", other_value, 0);
            continue;
        };
        let mut kept = Vec::new();
        let mut other = 0;
        for &c in &children[n as usize] {
            let t = tree.nodes[c as usize].total;
            if t == 0 {
                continue;
            }
            if t < min_total {
                other += t;
            } else {
                kept.push((Some(c), 0));
            }
        }
        if other > 0 {
            kept.push((None, other));
        }
        // The virtual root is Kiln's root node (`total`), nameless and without a value.
        let (name, self_value) = if first {
            ("", 0)
        } else {
            (tree.name_of(n), tree.nodes[n as usize].self_value)
        };
        first = false;
        node(&mut out, name, self_value, kept.len());
        stack.extend(kept);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_small_tree() {
        let tree = Tree::from_stacks([(vec!["a", "b"], 3), (vec!["a"], 1)]);
        let bytes = encode(&tree, 0);
        // root(0 children→1) a(self 1, 1 child) b(self 3, 0)
        assert_eq!(bytes, vec![0, 0, 1, 1, b'a', 1, 1, 1, b'b', 3, 0]);
        assert!(encode(&Tree::default(), 0).is_empty());
    }
}
