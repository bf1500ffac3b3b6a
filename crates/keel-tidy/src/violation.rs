//! What a rule reports.

use std::fmt;
use std::path::PathBuf;

/// One place where the tree breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name, as in [`crate::RULES`].
    pub rule: &'static str,
    /// The file, relative to the repository root (`crates/keel/src/cmd/run.rs`).
    pub file: PathBuf,
    /// The 1-based line the violation is on (1 when it is about the whole file).
    pub line: usize,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(rule: &'static str, file: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Violation { rule, file: file.into(), line, message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.file.display(), self.line, self.rule, self.message)
    }
}
