//! The module tree of one crate target and the references between its files, for the
//! `import-cycles` rule.
//!
//! Approximations (see [`crate::cycles`] for what they mean for the rule):
//! - modules are found from `mod name;` declarations and the file layout (`name.rs` or
//!   `name/mod.rs`); `#[path = "…"]` attributes and modules made by macros are not followed;
//! - a reference is a path in a `use` tree or in code that starts with `crate`, `super`,
//!   `self` or the name of a child module of the current module (Rust 2018 uniform paths);
//!   names brought in by a glob (`use super::*`) and then used bare are not followed;
//! - a reference to a name that its module re-exports with `pub use` (any visibility) leads to
//!   the re-exported item's file; glob re-exports are not followed.

use crate::lex::{Lexed, Tok, Token, matching};
use crate::tree;
use crate::violation::Violation;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Names re-exported by `pub use`: (module, name) → the item's absolute path.
type Reexports = HashMap<(ModPath, String), ModPath>;

/// Inline modules of a file: their path below the file's module and their byte range.
type InlineModules = Vec<(ModPath, Range<usize>)>;

/// One file of the tree.
struct File {
    rel: PathBuf,
    module: ModPath,
    lexed: Lexed,
    inline: InlineModules,
}

/// A crate target's files and the modules they declare.
pub(crate) struct Tree {
    files: Vec<File>,
    by_module: HashMap<ModPath, usize>,
    /// Every module path, file or inline.
    modules: HashSet<ModPath>,
}

/// A path referenced from a file, resolved to an absolute module path, with its line.
struct Reference {
    target: ModPath,
    line: usize,
}

/// The edges `(from file, to file) → first line` of a target's import graph.
pub(crate) type Edges = BTreeMap<(PathBuf, PathBuf), usize>;

impl Tree {
    /// Loads the target whose root file (`src/lib.rs`, `tests/it/main.rs`, …) is `root_file`.
    pub fn load(root: &Path, root_file: &Path, rule: &'static str, out: &mut Vec<Violation>) -> Tree {
        let mut tree = Tree { files: Vec::new(), by_module: HashMap::new(), modules: HashSet::new() };
        let dir = root_file.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut queue = vec![(root_file.to_path_buf(), ModPath::new(), dir)];
        while let Some((rel, module, children_dir)) = queue.pop() {
            if tree.by_module.contains_key(&module) {
                continue;
            }
            let text = match tree::read(root, &rel, rule) {
                Ok(t) => t,
                Err(v) => {
                    out.push(v);
                    continue;
                }
            };
            let lexed = Lexed::new(&text);
            let (inline, declared) = declarations(&lexed.tokens());
            for (ctx, name) in declared {
                let mut dir = children_dir.clone();
                dir.extend(&ctx);
                let (flat, nested) = (dir.join(format!("{name}.rs")), dir.join(&name).join("mod.rs"));
                let Some(file) = [flat, nested].into_iter().find(|f| root.join(f).is_file()) else { continue };
                let mut child = module.clone();
                child.extend(ctx.iter().cloned());
                child.push(name.clone());
                queue.push((file, child, dir.join(&name)));
            }
            for (path, _) in &inline {
                tree.modules.insert([module.clone(), path.clone()].concat());
            }
            tree.modules.insert(module.clone());
            tree.by_module.insert(module.clone(), tree.files.len());
            tree.files.push(File { rel, module, lexed, inline });
        }
        tree
    }

    /// The import graph: an edge from each file to each other file it references.
    pub fn edges(&self) -> Edges {
        let mut reexports = Reexports::new();
        let mut references = Vec::new();
        for file in &self.files {
            let (refs, exports) = self.references(file);
            reexports.extend(exports);
            references.push(refs);
        }
        let mut edges = Edges::new();
        for (file, refs) in self.files.iter().zip(references) {
            for r in refs {
                let Some(to) = self.file_of(&r.target, &reexports, 0) else { continue };
                let to = &self.files[to].rel;
                if *to != file.rel {
                    edges.entry((file.rel.clone(), to.clone())).or_insert(r.line);
                }
            }
        }
        edges
    }

    /// The file that holds the item at `target`, following re-exports.
    fn file_of(&self, target: &[String], reexports: &Reexports, hops: usize) -> Option<usize> {
        let k = (0..=target.len()).rev().find(|&k| self.modules.contains(&target[..k]))?;
        if k < target.len()
            && hops < 8
            && let Some(to) = reexports.get(&(target[..k].to_vec(), target[k].clone()))
        {
            let next = [to.as_slice(), &target[k + 1..]].concat();
            if next != target {
                return self.file_of(&next, reexports, hops + 1);
            }
        }
        let k = (0..=target.len()).rev().find(|&k| self.by_module.contains_key(&target[..k]))?;
        self.by_module.get(&target[..k]).copied()
    }

    /// The references a file makes and the names it re-exports (`(module, name) → target`).
    fn references(&self, file: &File) -> (Vec<Reference>, Reexports) {
        let toks = file.lexed.tokens();
        let tok = |j: usize| toks.get(j).map(|t| t.tok);
        let context = |at: usize| -> ModPath {
            let inner = file.inline.iter().filter(|(_, r)| r.contains(&at)).max_by_key(|(p, _)| p.len());
            [file.module.clone(), inner.map(|(p, _)| p.clone()).unwrap_or_default()].concat()
        };
        let (mut refs, mut exports, mut skip) = (Vec::new(), Reexports::new(), Vec::new());
        for (i, t) in toks.iter().enumerate() {
            if t.tok != Tok::Ident("use") || tok(i + 1) == Some(Tok::Punct(b'<')) {
                continue;
            }
            let end = (i..toks.len()).find(|&j| toks[j].tok == Tok::Punct(b';')).unwrap_or(toks.len());
            skip.push(t.at..toks.get(end).map_or(usize::MAX, |e| e.at));
            let ctx = context(t.at);
            let public = is_public(&toks, i);
            let mut leaves = Vec::new();
            use_tree(&toks[..end], &mut (i + 1), &[], &mut leaves);
            for leaf in leaves {
                let Some(target) = self.resolve(&ctx, &leaf.path) else { continue };
                if public && !leaf.glob {
                    let name = leaf.alias.or_else(|| leaf.path.last().cloned()).filter(|n| n != "_");
                    exports.extend(name.map(|n| ((ctx.clone(), n), target.clone())));
                }
                refs.push(Reference { target, line: file.lexed.line_of(t.at) });
            }
        }
        for (i, t) in toks.iter().enumerate() {
            let Tok::Ident(first) = t.tok else { continue };
            let starts_path = !matches!(tok(i.wrapping_sub(1)), Some(Tok::Sep | Tok::Punct(b'.' | b'$')));
            if !starts_path || tok(i + 1) != Some(Tok::Sep) || skip.iter().any(|r| r.contains(&t.at)) {
                continue;
            }
            let mut path = vec![first.to_string()];
            let mut j = i + 1;
            while let (Some(Tok::Sep), Some(Tok::Ident(s))) = (tok(j), tok(j + 1)) {
                path.push(s.to_string());
                j += 2;
            }
            if let Some(target) = self.resolve(&context(t.at), &path) {
                refs.push(Reference { target, line: file.lexed.line_of(t.at) });
            }
        }
        (refs, exports)
    }

    /// The absolute module path of `path` used in module `ctx`, if it is inside the crate.
    fn resolve(&self, ctx: &[String], path: &[String]) -> Option<ModPath> {
        let (mut base, mut rest) = match path.first()?.as_str() {
            "crate" => (ModPath::new(), &path[1..]),
            "self" | "super" => (ctx.to_vec(), path),
            _ if self.modules.contains(&[ctx, &path[..1]].concat()) => (ctx.to_vec(), path),
            _ => return None,
        };
        while let Some(first) = rest.first() {
            match first.as_str() {
                "self" => {}
                "super" => {
                    base.pop()?;
                }
                _ => break,
            }
            rest = &rest[1..];
        }
        Some([base.as_slice(), rest].concat().into_iter().filter(|s| s != "self").collect())
    }
}

/// Inline modules (path below the file's module, byte range) and `mod name;` declarations
/// (inline context, name) of a file.
fn declarations(toks: &[Token<'_>]) -> (InlineModules, Vec<(ModPath, String)>) {
    let (mut inline, mut declared) = (Vec::new(), Vec::new());
    let mut open: Vec<(ModPath, Range<usize>)> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        while open.last().is_some_and(|(_, r)| t.at >= r.end) {
            inline.push(open.pop().expect("checked above"));
        }
        let (Tok::Ident("mod"), Some(Tok::Ident(name))) = (t.tok, toks.get(i + 1).map(|t| t.tok)) else { continue };
        let ctx = open.last().map(|(p, _)| p.clone()).unwrap_or_default();
        match toks.get(i + 2).map(|t| t.tok) {
            Some(Tok::Punct(b';')) => declared.push((ctx, name.to_string())),
            Some(Tok::Punct(b'{')) => {
                let end = matching(toks, i + 2).map_or(usize::MAX, |e| toks[e].at + 1);
                open.push(([ctx, vec![name.to_string()]].concat(), t.at..end));
            }
            _ => {}
        }
    }
    inline.extend(open);
    (inline, declared)
}

/// Whether the `use` at `i` is `pub use` or `pub(…) use`.
fn is_public(toks: &[Token<'_>], i: usize) -> bool {
    match i.checked_sub(1).map(|j| toks[j].tok) {
        Some(Tok::Ident("pub")) => true,
        Some(Tok::Punct(b')')) => {
            let open = (0..i - 1).rev().find(|&j| toks[j].tok == Tok::Punct(b'('));
            open.is_some_and(|o| o > 0 && toks[o - 1].tok == Tok::Ident("pub"))
        }
        _ => false,
    }
}

/// One path of a `use` tree.
struct Leaf {
    path: ModPath,
    alias: Option<String>,
    glob: bool,
}

/// Parses the `use` tree starting at token `*i` (up to the end of `toks`) into its leaves.
fn use_tree(toks: &[Token<'_>], i: &mut usize, prefix: &[String], out: &mut Vec<Leaf>) {
    let tok = |j: usize| toks.get(j).map(|t| t.tok);
    let mut path = prefix.to_vec();
    if tok(*i) == Some(Tok::Sep) {
        *i += 1; // `use ::name` names an external crate; left to resolve() to reject
        path.push(String::new());
    }
    loop {
        match tok(*i) {
            Some(Tok::Ident(s)) => {
                path.push(s.to_string());
                *i += 1;
                if tok(*i) == Some(Tok::Sep) {
                    *i += 1;
                    continue;
                }
                let alias = match (tok(*i), tok(*i + 1)) {
                    (Some(Tok::Ident("as")), Some(Tok::Ident(a))) => {
                        *i += 2;
                        Some(a.to_string())
                    }
                    _ => None,
                };
                if path.last().is_some_and(|s| s == "self") {
                    path.pop();
                }
                out.push(Leaf { path, alias, glob: false });
                return;
            }
            Some(Tok::Punct(b'*')) => {
                *i += 1;
                out.push(Leaf { path, alias: None, glob: true });
                return;
            }
            Some(Tok::Punct(b'{')) => {
                *i += 1;
                while !matches!(tok(*i), Some(Tok::Punct(b'}')) | None) {
                    let before = *i;
                    use_tree(toks, i, &path, out);
                    if tok(*i) == Some(Tok::Punct(b',')) {
                        *i += 1;
                    } else if *i == before {
                        *i += 1; // not a tree: step over it rather than loop
                    }
                }
                *i += 1;
                return;
            }
            _ => return,
        }
    }
}
