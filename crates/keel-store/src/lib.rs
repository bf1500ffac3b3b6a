//! Keel's store: the only crate that speaks SQL.
//!
//! A store is a home folder (`.keel/` by default) holding `artifacts/`, a content-addressed
//! folder of immutable files, and the database: SQLite in WAL mode at `keel.db` by default, or
//! PostgreSQL when `KEEL_DATABASE_URL=postgres://...` is set. The same SQL, through sqlx's `Any`
//! driver, runs on both; only the migrations and the integrity check differ per backend.
//! Artifacts can live in an S3-compatible bucket instead (`KEEL_ARTIFACTS_URL=s3://bucket/prefix`),
//! with the same layout and the same hash check on every read.
//!
//! Invariants:
//! - An artifact's bytes are stored, complete and durable, before any row names them: a crash
//!   leaves at worst an unreferenced artifact, never a row pointing at a missing or partial one.
//! - Each logical change (a model version with its number, an alias move with its event) is one
//!   SQL transaction.

mod artifacts;
mod llm;
mod monitor;
mod registry;
mod schema;
mod steps;
mod store;
mod tx;

pub use artifacts::{ArtifactWriter, Artifacts, LocalArtifacts, ONE_PUT_BYTES, ObjectStoreArtifacts};
pub use llm::{CachedResponse, LlmCachePolicy, LlmCall, LlmUsage};
pub use monitor::{Feedback, PredictionRecord};
pub use registry::{AliasEvent, Lineage, ModelVersion, NewModelVersion};
pub use steps::{NewStep, PipelineEvent, StepRecord};
pub use store::{Dataset, NewDataset, Run, RunStatus, Store, StoreCheck, StoreOptions};

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{context}: {source}")]
    ObjectStore { context: String, source: Box<object_store::Error> },
    #[error("artifact {0} is missing from the store")]
    MissingArtifact(String),
    #[error("artifact {hash} is corrupt: its bytes hash to {actual}")]
    CorruptArtifact { hash: String, actual: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The current UTC time as fixed-width RFC 3339 with milliseconds, so text order is time order.
const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc().format(TIME_FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// The time `d` ago, as [`now`] writes times (they sort as strings).
pub(crate) fn ago(d: std::time::Duration) -> String {
    let d = time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    let t = time::OffsetDateTime::now_utc().checked_sub(d).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.max(time::OffsetDateTime::UNIX_EPOCH).format(TIME_FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}
