//! Rule `import-cycles`: no circle of references between the files of one crate.
//!
//! Files that use each other cannot be understood, tested or split one at a time. For every
//! crate target (`src/lib.rs`, `src/main.rs`, `src/bin/*`, `tests/*`, `examples/*`,
//! `benches/*`) this rule builds a graph with an edge from file A to file B when A refers to
//! an item of B: a `use crate::…`, `use super::…`, `use self::…` or `use child::…` (a child
//! module of the current one), or such a path in code (`crate::store::Store::open(…)`,
//! `super::pack(…)`, `routes::router(…)`). `pub use` re-exports are edges from the file that
//! makes them, and a path through a re-export leads to the file that defines the item (so
//! `use crate::Error` in `hnsw.rs` is an edge to `error.rs` when `lib.rs` says
//! `pub use error::Error`). A parent's `mod child;` is not an edge. Each strongly connected
//! component with more than one file is a violation listing its files and edges.
//!
//! Approximations (see `modules.rs`): `#[path]` attributes and macro-made modules are not
//! followed, glob imports do not make the bare names after them references, glob re-exports
//! are not followed (a path through one ends at the file that has the glob), and a path in
//! code counts only when it starts with `crate`, `self`, `super` or a child module's name.
//!
//! A module's root file (`lib.rs`, `main.rs`, a `mod.rs`) is its front door: it declares and
//! re-exports its children and holds the few items they all share, so edges to and from it are
//! left out, and a circle is one among the files behind the doors (as ARCHITECTURE.md's map
//! draws them).
//!
//! To fix: move what both sides need into a module of its own that neither of them is needed
//! by, or pass the value in instead of reaching for it.

use crate::modules::{Edges, Tree};
use crate::tree;
use crate::violation::Violation;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rule's name.
pub const RULE: &str = "import-cycles";

/// Checks every target of every crate for import circles.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in tree::crates(root, RULE, &mut out) {
        let mut edges = Edges::new();
        for target in targets(root, &c.dir) {
            let found = Tree::load(root, &target, RULE, &mut out).edges();
            edges.extend(found.into_iter().filter(|((from, to), _)| !is_door(from) && !is_door(to)));
        }
        for component in components(&edges) {
            out.push(violation(&component, &edges));
        }
    }
    out
}

/// A module's root file: `lib.rs`, `main.rs` or a `mod.rs`.
fn is_door(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "lib.rs" || n == "main.rs" || n == "mod.rs")
}

/// The root files of a crate's targets.
fn targets(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["src/lib.rs", "src/main.rs"].iter().map(|f| dir.join(f)).collect();
    for folder in ["src/bin", "tests", "examples", "benches"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(folder)) else { continue };
        for entry in entries.filter_map(|e| e.ok()) {
            let rel = dir.join(folder).join(entry.file_name());
            if rel.extension().is_some_and(|e| e == "rs") {
                out.push(rel);
            } else {
                out.push(rel.join("main.rs"));
            }
        }
    }
    out.retain(|f| root.join(f).is_file());
    out.sort();
    out
}

/// The strongly connected components with more than one file (Tarjan), each sorted, in file
/// order.
fn components(edges: &Edges) -> Vec<Vec<PathBuf>> {
    let mut next: BTreeMap<&PathBuf, Vec<&PathBuf>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    let nodes: Vec<&PathBuf> = next.keys().copied().collect();
    let index_of = |p: &PathBuf| nodes.binary_search(&p).expect("every node is a key");
    let succ: Vec<Vec<usize>> = nodes.iter().map(|n| next[n].iter().map(|m| index_of(m)).collect()).collect();
    let mut state = Tarjan { succ, index: vec![None; nodes.len()], low: vec![0; nodes.len()], ..Tarjan::default() };
    for v in 0..nodes.len() {
        if state.index[v].is_none() {
            state.visit(v);
        }
    }
    let mut out: Vec<Vec<PathBuf>> = state
        .found
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|v| nodes[v].clone()).collect::<BTreeSet<_>>().into_iter().collect())
        .collect();
    out.sort();
    out
}

#[derive(Default)]
struct Tarjan {
    succ: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    on_stack: BTreeSet<usize>,
    counter: usize,
    found: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack.insert(v);
        for w in self.succ[v].clone() {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack.contains(&w) => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(&w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.found.push(component);
        }
    }
}

fn violation(component: &[PathBuf], edges: &Edges) -> Violation {
    let inside: Vec<(&(PathBuf, PathBuf), &usize)> =
        edges.iter().filter(|((a, b), _)| component.contains(a) && component.contains(b)).collect();
    let files: Vec<String> = component.iter().map(|f| tree::slash(f)).collect();
    let listed: Vec<String> =
        inside.iter().map(|((a, b), line)| format!("{}:{line} uses {}", tree::slash(a), tree::slash(b))).collect();
    let line = inside.iter().find(|((a, _), _)| *a == component[0]).map_or(1, |(_, l)| **l);
    Violation::new(
        RULE,
        &component[0],
        line,
        format!(
            "import circle between {} files ({}): {}. Move what they share into a module that none of them is \
             needed by, or pass it in",
            files.len(),
            files.join(", "),
            listed.join("; ")
        ),
    )
}
