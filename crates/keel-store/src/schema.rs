//! Schema migrations, embedded in the binary and applied in order on open. Each backend has its
//! own SQL files with the same version numbers and the same logical schema.

use sqlx::AnyPool;

use crate::{Backend, Result};

const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_llm.sql")),
    (4, include_str!("../migrations/sqlite/0004_pipeline.sql")),
    (5, include_str!("../migrations/sqlite/0005_grounding.sql")),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_llm.sql")),
    (4, include_str!("../migrations/postgres/0004_pipeline.sql")),
    (5, include_str!("../migrations/postgres/0005_grounding.sql")),
];

pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<()> {
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    // Serialise concurrent openers: SQLite through its write lock (BEGIN IMMEDIATE), PostgreSQL
    // through a transaction-scoped advisory lock.
    let mut tx = crate::tx::write_tx(pool, backend).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7313)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    // Every migration not yet recorded runs, not only those above the highest applied: version
    // numbers are reserved per feature, so one can land after a higher one (0003 after 0004).
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *tx).await?;
    for &(version, sql) in migrations.iter().filter(|(v, _)| !applied.contains(v)) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
