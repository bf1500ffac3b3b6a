//! Keel's store: the only crate that speaks SQL.
//!
//! A store is a folder (`.keel/` by default) holding `keel.db` (SQLite in WAL mode) and
//! `artifacts/`, a content-addressed folder of immutable files. Every dataset version, run and
//! model version is a row; every model head, record set and quarantine file is an artifact.
//!
//! Invariants:
//! - An artifact's bytes are on disk, complete and fsynced, before any row names them: a crash
//!   leaves at worst an unreferenced file, never a row pointing at a missing or partial one.
//! - Each logical change (a new model version and its model row, an alias move) is one SQL
//!   transaction.

mod artifacts;
mod schema;
mod store;

pub use artifacts::Artifacts;
pub use store::{Dataset, ModelVersion, NewDataset, NewModelVersion, Run, RunStatus, Store, StoreCheck};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("artifact {0} is missing from the store")]
    MissingArtifact(String),
    #[error("artifact {hash} is corrupt: its bytes hash to {actual}")]
    CorruptArtifact { hash: String, actual: String },
    #[error("{0}")]
    NotFound(String),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The current UTC time as fixed-width RFC 3339 with milliseconds, so text order is time order.
pub(crate) fn now() -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}
