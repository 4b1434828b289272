//! The merged call tree a query returns.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// One node of a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Index of the parent node; the root is its own parent (0).
    pub parent: u32,
    /// Index into [`Tree::names`].
    pub name: u32,
    /// Value of samples whose leaf is this node.
    pub self_value: i64,
    /// `self_value` plus the totals of all children.
    pub total: i64,
}

/// A source location of a [`Tree`] node: an index into [`Tree::files`], a line and the first
/// line of the function (0: unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLine {
    pub file: u32,
    pub line: u32,
    #[serde(default)]
    pub start_line: u32,
}

/// A call tree in parent-pointer form: node 0 is the root, named `total`, and every node comes
/// after its parent. Nothing is ever truncated here; renderers decide what to cut.
///
/// A tree *with lines* (`lines` not empty) has one node per (function, file, line) under a
/// parent, so a function can appear among siblings several times; it feeds exports that carry
/// lines (pprof). Views that show functions — flamegraphs, top tables, folded text — take
/// [`Tree::by_function`], which merges those siblings. A tree without lines is already grouped
/// by function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub names: Vec<String>,
    pub nodes: Vec<TreeNode>,
    /// Source files named by [`SourceLine::file`]; empty when the tree has no lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The source line of each node (`lines[i]` for node `i`), or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<SourceLine>,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            names: vec!["total".to_string()],
            nodes: vec![TreeNode {
                parent: 0,
                name: 0,
                self_value: 0,
                total: 0,
            }],
            files: Vec::new(),
            lines: Vec::new(),
        }
    }
}

impl Tree {
    /// Builds a tree from `(stack root-first, value)` pairs.
    pub fn from_stacks<'a, I, S>(stacks: I) -> Self
    where
        I: IntoIterator<Item = (S, i64)>,
        S: IntoIterator<Item = &'a str>,
    {
        let mut b = TreeBuilder::default();
        for (stack, value) in stacks {
            b.add(stack, value);
        }
        b.build()
    }

    /// Whether nodes carry source lines (see the type's documentation).
    pub fn has_lines(&self) -> bool {
        !self.lines.is_empty()
    }

    /// The source line of `node`: file name, line and the function's first line, when the tree
    /// has lines.
    pub fn line_of(&self, node: u32) -> Option<(&str, u32, u32)> {
        let l = self.lines.get(node as usize)?;
        Some((
            self.files.get(l.file as usize).map_or("", String::as_str),
            l.line,
            l.start_line,
        ))
    }

    /// The same tree grouped by function: siblings of the same function (at different lines)
    /// become one node, and lines are dropped. A tree without lines is returned as is.
    pub fn by_function(self) -> Tree {
        if !self.has_lines() {
            return self;
        }
        let mut b = TreeBuilder::default();
        b.tree.names = self.names.clone();
        b.names = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mut map = vec![0u32; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            // Names may repeat in `names`; intern keeps the first index of each.
            let name = b.intern(&self.names[n.name as usize]);
            map[i] = b.child(map[n.parent as usize], name);
            b.add_self(map[i], n.self_value);
        }
        b.add_self(0, self.nodes[0].self_value);
        b.build()
    }

    /// The sum of all values.
    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    pub fn name_of(&self, node: u32) -> &str {
        &self.names[self.nodes[node as usize].name as usize]
    }

    /// Recomputes every `total` from the `self_value`s. Relies on parents preceding children.
    pub fn compute_totals(&mut self) {
        for n in &mut self.nodes {
            n.total = n.self_value;
        }
        for i in (1..self.nodes.len()).rev() {
            let (parent, total) = (self.nodes[i].parent as usize, self.nodes[i].total);
            self.nodes[parent].total += total;
        }
    }

    /// Child lists, in node order.
    pub fn children(&self) -> Vec<Vec<u32>> {
        let mut children = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            children[n.parent as usize].push(i as u32);
        }
        children
    }

    /// The frames from the root's child down to `node`.
    pub fn path(&self, mut node: u32) -> Vec<&str> {
        let mut path = Vec::new();
        while node != 0 {
            path.push(self.name_of(node));
            node = self.nodes[node as usize].parent;
        }
        path.reverse();
        path
    }

    /// `(stack, self value)` for every node with a self value, stacks root first.
    pub fn stacks(&self) -> impl Iterator<Item = (Vec<&str>, i64)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, n)| n.self_value != 0)
            .map(|(i, n)| (self.path(i as u32), n.self_value))
    }

    /// Folded text: `a;b;c value` per line, sorted, as flamegraph tools read it.
    pub fn to_folded(&self) -> String {
        let mut lines: Vec<String> = self
            .stacks()
            .map(|(stack, v)| format!("{} {v}", stack.join(";")))
            .collect();
        lines.sort();
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Divides every value by `n` (rounding to nearest), for average-aggregated types.
    pub fn divide(&mut self, n: i64) {
        if n > 1 {
            for node in &mut self.nodes {
                node.self_value = (node.self_value + n / 2) / n;
            }
            self.compute_totals();
        }
    }

    /// Self and total per function name, summed over every place the function appears;
    /// a function that recurses counts its total once per stack.
    pub fn function_totals(&self) -> Vec<FunctionTotal> {
        let mut by_name: FxHashMap<u32, FunctionTotal> = FxHashMap::default();
        // A node's total counts towards its function unless an ancestor has the same name.
        let mut on_path: Vec<u32> = Vec::new();
        let children = self.children();
        let mut stack: Vec<(u32, bool)> = vec![(0, false)];
        while let Some((node, leaving)) = stack.pop() {
            let n = self.nodes[node as usize];
            if leaving {
                on_path.pop();
                continue;
            }
            if node != 0 {
                let entry = by_name.entry(n.name).or_insert_with(|| FunctionTotal {
                    name: self.names[n.name as usize].clone(),
                    self_value: 0,
                    total: 0,
                });
                entry.self_value += n.self_value;
                if !on_path.contains(&n.name) {
                    entry.total += n.total;
                }
            }
            on_path.push(if node == 0 { u32::MAX } else { n.name });
            stack.push((node, true));
            for &c in children[node as usize].iter().rev() {
                stack.push((c, false));
            }
        }
        let mut out: Vec<FunctionTotal> = by_name.into_values().collect();
        out.sort_by(|a, b| b.self_value.cmp(&a.self_value).then(a.name.cmp(&b.name)));
        out
    }
}

/// A row of the top table: one function's self and total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionTotal {
    pub name: String,
    #[serde(rename = "self")]
    pub self_value: i64,
    pub total: i64,
}

/// Incrementally builds a [`Tree`] from stacks given as frame names.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    tree: Tree,
    names: FxHashMap<String, u32>,
    edges: FxHashMap<(u32, u32), u32>,
    /// With lines: interned files, and children keyed by (parent, name, file, line).
    files: FxHashMap<String, u32>,
    line_edges: FxHashMap<(u32, u32, SourceLine), u32>,
}

impl TreeBuilder {
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        let i = self.tree.names.len() as u32;
        self.tree.names.push(name.to_string());
        self.names.insert(name.to_string(), i);
        i
    }

    /// The child of `parent` named `name` (an index from [`Self::intern`]), created if needed.
    pub fn child(&mut self, parent: u32, name: u32) -> u32 {
        if let Some(&i) = self.edges.get(&(parent, name)) {
            return i;
        }
        let i = self.tree.nodes.len() as u32;
        self.tree.nodes.push(TreeNode {
            parent,
            name,
            self_value: 0,
            total: 0,
        });
        self.edges.insert((parent, name), i);
        i
    }

    /// Adds `value` to the leaf of `stack` (root first).
    pub fn add<'a>(&mut self, stack: impl IntoIterator<Item = &'a str>, value: i64) {
        let mut node = 0;
        for frame in stack {
            let name = self.intern(frame);
            node = self.child(node, name);
        }
        self.add_self(node, value);
    }

    pub fn add_self(&mut self, node: u32, value: i64) {
        self.tree.nodes[node as usize].self_value += value;
    }

    /// The child of `parent` named `name` at a source line, created if needed: the builder then
    /// makes a tree with lines. Do not mix with [`Self::child`] in one tree.
    pub fn child_at(
        &mut self,
        parent: u32,
        name: u32,
        file: &str,
        line: u32,
        start_line: u32,
    ) -> u32 {
        if self.tree.files.is_empty() {
            self.tree.files.push(String::new());
            self.files.insert(String::new(), 0);
            // The root has no line.
            self.tree
                .lines
                .resize(self.tree.nodes.len(), SourceLine::default());
        }
        let file = match self.files.get(file) {
            Some(&f) => f,
            None => {
                let f = self.tree.files.len() as u32;
                self.tree.files.push(file.to_string());
                self.files.insert(file.to_string(), f);
                f
            }
        };
        let at = SourceLine {
            file,
            line,
            start_line,
        };
        if let Some(&i) = self.line_edges.get(&(parent, name, at)) {
            return i;
        }
        let i = self.tree.nodes.len() as u32;
        self.tree.nodes.push(TreeNode {
            parent,
            name,
            self_value: 0,
            total: 0,
        });
        self.tree.lines.push(at);
        self.line_edges.insert((parent, name, at), i);
        i
    }

    /// Adds every stack of `other` into this tree (keeping its lines when it has some).
    pub fn merge(&mut self, other: &Tree) {
        if other.has_lines() {
            let mut map = vec![0u32; other.nodes.len()];
            for (i, n) in other.nodes.iter().enumerate().skip(1) {
                let name = self.intern(&other.names[n.name as usize]);
                let (file, line, start) = other.line_of(i as u32).unwrap_or(("", 0, 0));
                map[i] = self.child_at(map[n.parent as usize], name, file, line, start);
                self.add_self(map[i], n.self_value);
            }
            self.add_self(0, other.nodes[0].self_value);
            return;
        }
        let mut map = vec![0u32; other.nodes.len()];
        for (i, n) in other.nodes.iter().enumerate().skip(1) {
            let name = self.intern(&other.names[n.name as usize]);
            map[i] = self.child(map[n.parent as usize], name);
            self.add_self(map[i], n.self_value);
        }
        self.add_self(0, other.nodes[0].self_value);
    }

    pub fn build(mut self) -> Tree {
        self.tree.compute_totals();
        self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_totals_and_folded() {
        let t = Tree::from_stacks([
            (vec!["foo", "bar"], 100),
            (vec!["foo", "baz"], 200),
            (vec!["foo"], 5),
        ]);
        assert_eq!(t.total(), 305);
        assert_eq!(t.nodes[1].total, 305);
        assert_eq!(t.to_folded(), "foo 5\nfoo;bar 100\nfoo;baz 200\n");
    }

    #[test]
    fn merge_adds_matching_paths() {
        let a = Tree::from_stacks([(vec!["a", "b"], 1)]);
        let b = Tree::from_stacks([(vec!["a", "b"], 2), (vec!["c"], 3)]);
        let mut m = TreeBuilder::default();
        m.merge(&a);
        m.merge(&b);
        let m = m.build();
        assert_eq!(m.total(), 6);
        assert_eq!(m.to_folded(), "a;b 3\nc 3\n");
    }

    #[test]
    fn function_totals_count_recursion_once() {
        let t = Tree::from_stacks([(vec!["a", "b", "a"], 10), (vec!["a", "c"], 5)]);
        let f = t.function_totals();
        let a = f.iter().find(|f| f.name == "a").unwrap();
        assert_eq!((a.self_value, a.total), (10, 15));
        let b = f.iter().find(|f| f.name == "b").unwrap();
        assert_eq!((b.self_value, b.total), (0, 10));
    }

    #[test]
    fn divide_rounds_and_recomputes() {
        let mut t = Tree::from_stacks([(vec!["a"], 9), (vec!["b"], 3)]);
        t.divide(2);
        assert_eq!(t.total(), 7);
    }

    #[test]
    fn lines_merge_and_group_by_function() {
        let mut b = TreeBuilder::default();
        let (main, work) = (b.intern("main"), b.intern("work"));
        let m = b.child_at(0, main, "main.go", 10, 8);
        let w1 = b.child_at(m, work, "work.go", 3, 1);
        let w2 = b.child_at(m, work, "work.go", 4, 1);
        assert_ne!(w1, w2);
        b.add_self(w1, 5);
        b.add_self(w2, 7);
        let t = b.build();
        assert!(t.has_lines());
        assert_eq!(t.line_of(w2), Some(("work.go", 4, 1)));
        let mut again = TreeBuilder::default();
        again.merge(&t);
        again.merge(&t);
        let twice = again.build();
        assert_eq!(twice.nodes.len(), t.nodes.len());
        assert_eq!(twice.total(), 24);
        let g = t.by_function();
        assert!(!g.has_lines());
        assert_eq!(g.to_folded(), "main;work 12\n");
        let f = g.function_totals();
        assert_eq!((f[0].name.as_str(), f[0].self_value), ("work", 12));
    }
}
