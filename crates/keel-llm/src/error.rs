use std::path::PathBuf;

/// Everything that can go wrong in keel-llm.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("GGUF model {}: {message}", path.display())]
    Gguf { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("unsupported chat template (Keel renders ChatML templates with <|im_start|>): {0}")]
    Template(String),
    #[error("{endpoint} answered HTTP {status}: {body}")]
    Http { endpoint: String, status: u16, body: String },
    #[error("{endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("{endpoint} sent a response Keel cannot read: {message}")]
    BadResponse { endpoint: String, message: String },
    #[error("{endpoint}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp { endpoint: String, attempts: u64, last: String },
    #[error("every generator failed: {}", .failed.iter().map(|(g, e)| format!("{g}: {e}")).collect::<Vec<_>>().join("; "))]
    AllFailed { failed: Vec<(String, String)>, attempts: u64 },
    #[error("no generator configured")]
    NoGenerator,
    #[error("the prompt needs {needed} tokens but the model's window leaves {available} after reserving the answer")]
    ContextTooSmall { needed: usize, available: usize },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] keel_embed::EmbedError),
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    #[error("generation task failed: {0}")]
    Task(String),
}

impl LlmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LlmError::Io { path: path.into(), source }
    }
}
