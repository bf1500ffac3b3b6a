//! Rule `layers`: each crate keeps to its layer (ARCHITECTURE.md, "Invariants").
//!
//! Read from the `[dependencies]` (and `[target.*.dependencies]`) of every `crates/*/Cargo.toml`;
//! dev-dependencies are free, since tests may drive a crate through any other. A renamed
//! dependency (`package = "…"`, here or in the root's `[workspace.dependencies]`) counts under
//! its real name.
//!
//! - SQL crates (`sqlx`, `rusqlite`, `postgres`, …) only in keel-store.
//! - `clap` only in keel, the binary.
//! - HTTP server crates (`axum`, `hyper`, `tower`, `tower-http`, `actix-web`, …) only in
//!   keel-server: the binary starts the server through keel-server's API.
//! - HTTP client crates (`ureq`, `reqwest`, `hf-hub`, `object_store`, …) only in keel-llm
//!   (endpoints), keel-embed (the model hub) and keel-store (object storage), an allow-list, so
//!   a new client anywhere else fails here first.
//! - keel-core, keel-train, keel-eval and keel-monitor do no IO: none of the crates above, no
//!   async runtime (`tokio`, …), no `tempfile`/`memmap2`, and no `std::fs`, `std::net`,
//!   `std::process` or `File::` in the code of their `src/` (comments, strings and inline
//!   `#[cfg(test)] mod … { }` blocks are not looked at; `tests/` and `examples/` are free).
//! - keel-data does no network: no async runtime and no `std::net`.
//! - keel-core depends on no other keel crate.
//!
//! To fix a violation, move the code to the crate that owns the concern (a query into a
//! `Store` method, a route into keel-server, argument parsing into `crates/keel/src/cli.rs`,
//! file reading into the caller) and pass plain values across. Changing an allow-list here is
//! changing the architecture: do it together with ARCHITECTURE.md.

use crate::lex::{Lexed, Tok, cfg_test_modules};
use crate::tree::{self, Crate};
use crate::violation::Violation;
use std::path::Path;

/// The rule's name.
pub const RULE: &str = "layers";

const SQL: &[&str] = &["sqlx", "rusqlite", "postgres", "tokio-postgres", "diesel", "sea-orm", "libsqlite3-sys"];
const HTTP_SERVER: &[&str] =
    &["axum", "hyper", "hyper-util", "tower", "tower-http", "actix-web", "warp", "rocket", "poem", "tiny_http"];
const HTTP_CLIENT: &[&str] = &["ureq", "reqwest", "hf-hub", "object_store", "isahc", "attohttpc", "curl"];
const ASYNC_RUNTIMES: &[&str] = &["tokio", "async-std", "smol", "mio"];
const FILE_IO: &[&str] = &["tempfile", "memmap2"];

/// A family of crates allowed only in some Keel crates.
struct Only {
    deps: &'static [&'static str],
    r#in: &'static [&'static str],
    why: &'static str,
    fix: &'static str,
}

const ONLY: &[Only] = &[
    Only {
        deps: SQL,
        r#in: &["keel-store"],
        why: "only keel-store speaks SQL",
        fix: "put the query behind a `Store` method in keel-store and call that",
    },
    Only {
        deps: &["clap"],
        r#in: &["keel"],
        why: "only keel (the binary) knows clap",
        fix: "take plain values or a config struct here and define the arguments in crates/keel/src/cli.rs",
    },
    Only {
        deps: HTTP_SERVER,
        r#in: &["keel-server"],
        why: "only keel-server knows HTTP serving",
        fix: "put the route or middleware in keel-server and start it through keel-server's API",
    },
    Only {
        deps: HTTP_CLIENT,
        r#in: &["keel-llm", "keel-embed", "keel-store"],
        why: "HTTP clients are allowed only in keel-llm (endpoints), keel-embed (model hub) and keel-store \
              (object storage)",
        fix: "make the request in one of those crates; if this crate truly needs the network, add it to the \
              allow-list in crates/keel-tidy/src/layers.rs and say why in ARCHITECTURE.md",
    },
];

const NO_IO: &[&str] = &["keel-core", "keel-train", "keel-eval", "keel-monitor"];
const NO_NETWORK: &[&str] = &["keel-data"];

/// Checks every crate's dependencies and the source of the crates that do no IO.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    let workspace = read_manifest(root, Path::new("Cargo.toml"), &mut out).map(|(t, _)| t);
    let renames = workspace.as_ref().and_then(|w| w.get("workspace")?.get("dependencies")?.as_table()).cloned();
    for c in tree::crates(root, RULE, &mut out) {
        let manifest = c.dir.join("Cargo.toml");
        let Some((table, text)) = read_manifest(root, &manifest, &mut out) else { continue };
        for (key, name) in dependencies(&table, renames.as_ref()) {
            if let Some(message) = dependency_violation(&c.name, &name) {
                out.push(Violation::new(RULE, &manifest, dependency_line(&text, &key), message));
            }
        }
        let io = if NO_IO.contains(&c.name.as_str()) {
            &["fs", "net", "process"][..]
        } else if NO_NETWORK.contains(&c.name.as_str()) {
            &["net"][..]
        } else {
            continue;
        };
        scan_source(root, &c, io, &mut out);
    }
    out
}

fn read_manifest(root: &Path, rel: &Path, out: &mut Vec<Violation>) -> Option<(toml::Table, String)> {
    let text = tree::read(root, rel, RULE).map_err(|v| out.push(v)).ok()?;
    match text.parse::<toml::Table>() {
        Ok(t) => Some((t, text)),
        Err(e) => {
            out.push(Violation::new(RULE, rel, 1, format!("not a valid TOML manifest: {e}")));
            None
        }
    }
}

/// `(key, real package name)` of the normal dependencies, target-specific ones included.
fn dependencies(manifest: &toml::Table, renames: Option<&toml::Table>) -> Vec<(String, String)> {
    let mut tables: Vec<&toml::Table> = manifest.get("dependencies").and_then(|d| d.as_table()).into_iter().collect();
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        tables.extend(targets.values().filter_map(|t| t.get("dependencies")?.as_table()));
    }
    let package = |v: &toml::Value| v.get("package").and_then(|p| p.as_str()).map(str::to_string);
    let mut out = Vec::new();
    for table in tables {
        for (key, spec) in table {
            let inherited = spec.get("workspace").and_then(|w| w.as_bool()) == Some(true);
            let name = package(spec)
                .or_else(|| inherited.then(|| renames?.get(key).and_then(package)).flatten())
                .unwrap_or_else(|| key.clone());
            out.push((key.clone(), name));
        }
    }
    out
}

fn dependency_violation(krate: &str, dep: &str) -> Option<String> {
    if krate == "keel-core" && dep.starts_with("keel-") {
        return Some(format!(
            "keel-core depends on `{dep}`, but keel-core depends on no other keel crate (it holds the nouns \
             every crate shares): move the shared type into keel-core, or the code that needs `{dep}` out of it"
        ));
    }
    if let Some(only) = ONLY.iter().find(|o| o.deps.contains(&dep) && !o.r#in.contains(&krate)) {
        return Some(format!("{krate} depends on `{dep}`, but {}: {}", only.why, only.fix));
    }
    let io = [ASYNC_RUNTIMES, FILE_IO, SQL, HTTP_SERVER, HTTP_CLIENT].concat();
    if NO_IO.contains(&krate) && io.contains(&dep) {
        return Some(format!(
            "{krate} depends on `{dep}`, but {krate} does no IO (ARCHITECTURE.md, Invariants): take values, \
             readers or writers from the caller and leave the IO to the binary or keel-store"
        ));
    }
    if NO_NETWORK.contains(&krate) && ASYNC_RUNTIMES.contains(&dep) {
        return Some(format!(
            "{krate} depends on `{dep}`, but {krate} does no network (ARCHITECTURE.md, Invariants): it reads \
             files the caller names; fetch elsewhere and hand it a path or a reader"
        ));
    }
    None
}

/// The line of the manifest that declares dependency `key` (1 if it cannot be found).
fn dependency_line(text: &str, key: &str) -> usize {
    let mut in_deps = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(header) = t.strip_prefix('[') {
            let h = header.trim_end_matches(']').trim();
            if h == format!("dependencies.{key}") || h.ends_with(&format!(".dependencies.{key}")) {
                return i + 1;
            }
            in_deps = h == "dependencies" || (h.starts_with("target.") && h.ends_with(".dependencies"));
            continue;
        }
        let rest = t.strip_prefix(key).or_else(|| t.strip_prefix(&format!("\"{key}\"")));
        if in_deps && rest.is_some_and(|r| r.starts_with([' ', '=', '.'])) {
            return i + 1;
        }
    }
    1
}

/// Flags `std::<m>`, `std::{…, <m>, …}` for each `m` in `modules`, and `File::` when files are
/// forbidden, in the code of the crate's `src/`.
fn scan_source(root: &Path, c: &Crate, modules: &[&str], out: &mut Vec<Violation>) {
    for rel in tree::rust_files(root, &c.dir.join("src"), RULE, out) {
        let text = match tree::read(root, &rel, RULE) {
            Ok(t) => t,
            Err(v) => {
                out.push(v);
                continue;
            }
        };
        let lexed = Lexed::new(&text);
        let toks = lexed.tokens();
        let tests = cfg_test_modules(&toks);
        let tok = |j: usize| toks.get(j).map(|t| t.tok);
        for (i, t) in toks.iter().enumerate() {
            if tests.iter().any(|r| r.contains(&t.at)) {
                continue;
            }
            let mut found: Vec<String> = Vec::new();
            match (t.tok, tok(i + 1), tok(i + 2)) {
                (Tok::Ident("std"), Some(Tok::Sep), Some(Tok::Ident(m))) if modules.contains(&m) => {
                    found.push(format!("std::{m}"));
                }
                (Tok::Ident("std"), Some(Tok::Sep), Some(Tok::Punct(b'{'))) => {
                    found
                        .extend(group_heads(&toks, i + 2).filter(|m| modules.contains(m)).map(|m| format!("std::{m}")));
                }
                (Tok::Ident("File"), Some(Tok::Sep), _)
                    if modules.contains(&"fs") && tok(i.wrapping_sub(1)) != Some(Tok::Sep) =>
                {
                    found.push("File::".into());
                }
                _ => {}
            }
            for what in found {
                out.push(Violation::new(RULE, &rel, lexed.line_of(t.at), io_message(&c.name, &what)));
            }
        }
    }
}

/// The first segment of each item of the `{ … }` group opened at `open`.
fn group_heads<'a>(toks: &'a [crate::lex::Token<'a>], open: usize) -> impl Iterator<Item = &'a str> + 'a {
    let close = crate::lex::matching(toks, open).unwrap_or(toks.len() - 1);
    (open + 1..close).filter_map(move |j| match (toks[j - 1].tok, toks[j].tok) {
        (Tok::Punct(b'{' | b','), Tok::Ident(s)) if depth(toks, open, j) == 1 => Some(s),
        _ => None,
    })
}

fn depth(toks: &[crate::lex::Token<'_>], open: usize, at: usize) -> usize {
    toks[open..at].iter().fold(0isize, |d, t| match t.tok {
        Tok::Punct(b'{') => d + 1,
        Tok::Punct(b'}') => d - 1,
        _ => d,
    }) as usize
}

fn io_message(krate: &str, what: &str) -> String {
    if what == "std::net" && NO_NETWORK.contains(&krate) {
        return format!(
            "`{what}` in {krate}, but {krate} does no network (ARCHITECTURE.md, Invariants): fetch elsewhere \
             and hand it a path or a reader"
        );
    }
    format!(
        "`{what}` in {krate}, but {krate} does no IO (ARCHITECTURE.md, Invariants): take the bytes, a reader \
         or a writer from the caller, and leave files, sockets and processes to the binary or keel-store"
    )
}
