//! Keel's tidy test: the rules of ARCHITECTURE.md, checked on the tree.
//!
//! ARCHITECTURE.md states the rules the code keeps ("only keel-store speaks SQL", "`kernels/`
//! is the crate's only `unsafe`", …). Rules a compiler does not check drift unless a test does;
//! this crate is that test, in the manner of rust-analyzer's `tidy.rs`. Each rule is a function
//! from the repository root to every [`Violation`] it finds (not just the first), each with the
//! file, the line, and a message saying what is wrong and what to do:
//!
//! | rule | protects | module |
//! |---|---|---|
//! | `layers` | each crate keeps to its layer: SQL, clap, HTTP serving and HTTP clients only where the map puts them; no IO in keel-core, keel-train, keel-eval, keel-monitor | [`layers`] |
//! | `unsafe` | `unsafe` only in the kernel modules, each use with a `// SAFETY:` comment or `# Safety` doc | [`unsafe_code`] |
//! | `architecture-map` | every file over 400 lines is named in ARCHITECTURE.md | [`architecture`] |
//! | `size` | outside the kernels: files ≤ 800 lines, functions ≤ 100 lines, no `too_many_arguments` allowance | [`size`] |
//! | `import-cycles` | no circle of references between the files of a crate | [`cycles`] |
//! | `json-indexing` | the binary reads step outputs and metrics through types, not `value["field"]` | [`json_index`] |
//!
//! `cargo test -p keel-tidy` runs them all on this repository (`the_tree_keeps_its_rules`) and
//! each one on small broken trees. The checks read source text with a small lexer
//! (comments and literals skipped, braces matched), not a Rust parser; each module says where
//! that makes its rule approximate. A rule that is wrong about a file is fixed here, with a
//! test, not silenced in the file.

pub mod architecture;
pub mod cycles;
pub mod debt;
pub mod json_index;
pub mod layers;
mod lex;
mod modules;
pub mod size;
mod tree;
pub mod unsafe_code;
mod violation;

pub use violation::Violation;

use std::path::Path;

/// A rule: its name and its check.
pub type Rule = (&'static str, fn(&Path) -> Vec<Violation>);

/// Every rule, in the order of the table above.
pub const RULES: &[Rule] = &[
    (layers::RULE, layers::check),
    (unsafe_code::RULE, unsafe_code::check),
    (architecture::RULE, architecture::check),
    (size::RULE, size::check),
    (cycles::RULE, cycles::check),
    (json_index::RULE, json_index::check),
];

/// Runs every rule on the repository at `root`.
pub fn check_all(root: &Path) -> Vec<Violation> {
    RULES.iter().flat_map(|(_, check)| check(root)).collect()
}
