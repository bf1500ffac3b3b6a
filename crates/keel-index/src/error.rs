use std::path::PathBuf;

/// Everything that can go wrong in keel-index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("BM25 index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("no index at {0}; build one with `keel index PATH`")]
    NotFound(PathBuf),
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), message: message.into() }
    }
}
