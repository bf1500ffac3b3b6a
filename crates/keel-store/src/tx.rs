//! Write transactions: the one way the store starts a transaction that writes.

use sqlx::{AnyPool, Transaction};

use crate::{Backend, Result};

/// Starts a transaction that holds the write lock from its first statement (SQLite's
/// `BEGIN IMMEDIATE`), so that read-then-write transactions queue instead of failing.
pub(crate) async fn write_tx(pool: &AnyPool, backend: Backend) -> Result<Transaction<'static, sqlx::Any>> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}
