//! The model registry: versions (numbered in the registering transaction, found again by
//! their input key), aliases and their history (every move with its reason), lineage, and
//! resolving `NAME`, `NAME@VERSION` or `NAME@ALIAS`.

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Row, Transaction};

use crate::store::{Dataset, Run, Store};
use crate::tx::write_tx;
use crate::{Result, StoreError, now};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewModelVersion {
    pub name: String,
    /// Hash of everything the version was made from; registering the same key twice returns
    /// the existing version.
    pub input_key: ContentHash,
    pub run_id: String,
    pub dataset_id: ContentHash,
    pub encoder_id: String,
    pub head_artifact: ContentHash,
    pub metrics: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub input_key: String,
    pub run_id: String,
    pub dataset_id: String,
    pub encoder_id: String,
    pub head_artifact: String,
    pub metrics: serde_json::Value,
    pub created_at: String,
    /// Aliases pointing at this version (`production`, ...).
    pub aliases: Vec<String>,
}

impl ModelVersion {
    /// `NAME@VERSION`, as responses name the model that answered.
    pub fn tag(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// One move of an alias.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasEvent {
    pub alias: String,
    pub version: i64,
    pub previous_version: Option<i64>,
    pub reason: String,
    pub at: String,
}

/// Where a model version came from.
#[derive(Clone, Debug, Serialize)]
pub struct Lineage {
    pub model: ModelVersion,
    pub run: Run,
    pub dataset: Dataset,
    /// Alias moves that pointed at this version.
    pub alias_events: Vec<AliasEvent>,
}

/// Aliases are short lowercase words: `production`, `staging`, `candidate`, `archived`, ...
fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 32
        && alias.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && alias.parse::<i64>().is_err();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "alias {alias:?} is not valid: use a short lowercase word such as production, staging, candidate or archived"
        )))
    }
}

impl Store {
    /// Registers a model version, or returns the existing one with the same input key (then
    /// the flag is false). The model row, the version number and the version row are one
    /// transaction; concurrent registrations get distinct numbers.
    pub async fn register_model_version(&self, v: &NewModelVersion) -> Result<(ModelVersion, bool)> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        sqlx::query(
            "INSERT INTO models (name, next_version, created_at) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&v.name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        // The model row's lock (PostgreSQL; SQLite's write lock is held from BEGIN IMMEDIATE)
        // is taken before the input key is looked up: a registration of the same inputs running
        // at the same time waits here until the other commits, then finds its version (each
        // statement of a READ COMMITTED transaction sees what committed before it began).
        sqlx::query("UPDATE models SET next_version = next_version WHERE name = $1")
            .bind(&v.name)
            .execute(&mut *tx)
            .await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT version FROM model_versions WHERE name = $1 AND input_key = $2")
                .bind(&v.name)
                .bind(v.input_key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(version) = existing {
            tx.rollback().await?;
            return Ok((self.model_version(&v.name, version).await?, false));
        }
        // Under the same lock, so no two registrations get the same number.
        let version: i64 = sqlx::query_scalar(
            "UPDATE models SET next_version = next_version + 1 WHERE name = $1 RETURNING next_version - 1",
        )
        .bind(&v.name)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO model_versions (name, version, input_key, run_id, dataset_id, encoder_id, head_artifact, metrics, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&v.name)
        .bind(version)
        .bind(v.input_key.as_str())
        .bind(&v.run_id)
        .bind(v.dataset_id.as_str())
        .bind(&v.encoder_id)
        .bind(v.head_artifact.as_str())
        .bind(v.metrics.to_string())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((self.model_version(&v.name, version).await?, true))
    }

    /// Looks up a version made from exactly these inputs, if one exists.
    pub async fn find_model_version(&self, name: &str, input_key: &ContentHash) -> Result<Option<ModelVersion>> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM model_versions WHERE name = $1 AND input_key = $2")
                .bind(name)
                .bind(input_key.as_str())
                .fetch_optional(&self.pool)
                .await?;
        match version {
            Some(v) => Ok(Some(self.model_version(name, v).await?)),
            None => Ok(None),
        }
    }

    pub async fn model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        let row = sqlx::query("SELECT * FROM model_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no model version {name}@{version}")))?;
        self.version_from_row(&row).await
    }

    async fn version_from_row(&self, row: &AnyRow) -> Result<ModelVersion> {
        let name: String = row.try_get("name")?;
        let version: i64 = row.try_get("version")?;
        let aliases: Vec<String> =
            sqlx::query_scalar("SELECT alias FROM aliases WHERE name = $1 AND version = $2 ORDER BY alias")
                .bind(&name)
                .bind(version)
                .fetch_all(&self.pool)
                .await?;
        Ok(ModelVersion {
            name,
            version,
            input_key: row.try_get("input_key")?,
            run_id: row.try_get("run_id")?,
            dataset_id: row.try_get("dataset_id")?,
            encoder_id: row.try_get("encoder_id")?,
            head_artifact: row.try_get("head_artifact")?,
            metrics: serde_json::from_str(row.try_get("metrics")?)?,
            created_at: row.try_get("created_at")?,
            aliases,
        })
    }

    /// The names of all registered models, sorted.
    pub async fn model_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM models ORDER BY name").fetch_all(&self.pool).await?)
    }

    /// All versions of all models, newest first.
    pub async fn model_versions(&self) -> Result<Vec<ModelVersion>> {
        let rows =
            sqlx::query("SELECT * FROM model_versions ORDER BY name, version DESC").fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.version_from_row(row).await?);
        }
        Ok(out)
    }

    /// Points `alias` of model `name` at `version` and records the move with its reason, in one
    /// transaction. Returns the version the alias pointed at before, if any.
    pub async fn set_alias(&self, name: &str, alias: &str, version: i64, reason: &str) -> Result<Option<i64>> {
        validate_alias(alias)?;
        let mut tx = self.alias_tx(name).await?;
        let previous = move_alias(&mut tx, name, alias, version, reason).await?;
        tx.commit().await?;
        Ok(previous)
    }

    /// Moves `alias` back to the version it pointed at before its latest move.
    /// Returns (from, to).
    pub async fn rollback(&self, name: &str, alias: &str) -> Result<(i64, i64)> {
        // The latest move is read under the same lock as the move back, so that a promotion or
        // another rollback in between cannot make this one undo a move it never saw.
        let mut tx = self.alias_tx(name).await?;
        let last: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT version, previous_version FROM alias_events WHERE name = $1 AND alias = $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(name)
        .bind(alias)
        .fetch_optional(&mut *tx)
        .await?;
        match last {
            None => Err(StoreError::NotFound(format!("model {name} has never had a {alias} version"))),
            Some((_, None)) => {
                Err(StoreError::Invalid(format!("{name}@{alias} has no earlier version to roll back to")))
            }
            Some((from, Some(to))) => {
                move_alias(&mut tx, name, alias, to, &format!("rollback from version {from}")).await?;
                tx.commit().await?;
                Ok((from, to))
            }
        }
    }

    /// A write transaction holding the lock that serialises alias moves of model `name`: the
    /// model row's lock on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already holds the write lock),
    /// so each move reads the true current state and records the true previous version.
    async fn alias_tx(&self, name: &str) -> Result<Transaction<'static, sqlx::Any>> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        sqlx::query("UPDATE models SET next_version = next_version WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Every alias move of a model, oldest first.
    pub async fn alias_events(&self, name: &str) -> Result<Vec<AliasEvent>> {
        let rows = sqlx::query("SELECT * FROM alias_events WHERE name = $1 ORDER BY seq")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AliasEvent {
                    alias: r.try_get("alias")?,
                    version: r.try_get("version")?,
                    previous_version: r.try_get("previous_version")?,
                    reason: r.try_get("reason")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// The chain from the raw file to the model version: version → run → dataset → source.
    pub async fn lineage(&self, spec: &str) -> Result<Lineage> {
        let model = self.resolve(spec).await?;
        let run = self.run(&model.run_id).await?;
        let dataset = self.dataset(&model.dataset_id).await?;
        let events = self.alias_events(&model.name).await?.into_iter().filter(|e| e.version == model.version).collect();
        Ok(Lineage { model, run, dataset, alias_events: events })
    }

    /// Resolves `NAME`, `NAME@VERSION` or `NAME@ALIAS`. A bare name means its `production`
    /// alias when set, otherwise its latest version.
    pub async fn resolve(&self, spec: &str) -> Result<ModelVersion> {
        let (name, which) = spec.split_once('@').map_or((spec, None), |(n, w)| (n, Some(w)));
        if let Some(v) = which.and_then(|w| w.parse::<i64>().ok()) {
            return self.model_version(name, v).await;
        }
        let alias = which.unwrap_or("production");
        let aliased: Option<i64> = sqlx::query_scalar("SELECT version FROM aliases WHERE name = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        let version = match (aliased, which) {
            (Some(v), _) => v,
            (None, Some(_)) => return Err(StoreError::NotFound(format!("model {name} has no alias {alias:?}"))),
            (None, None) => sqlx::query_scalar("SELECT MAX(version) FROM model_versions WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "no model named {name:?}; train one first (keel quickstart or keel train)"
                    ))
                })?,
        };
        self.model_version(name, version).await
    }
}

/// Points an alias at a version and records the move, inside `tx`, which must come from
/// `Store::alias_tx`. Returns the version the alias pointed at before, if any.
async fn move_alias(
    tx: &mut Transaction<'static, sqlx::Any>,
    name: &str,
    alias: &str,
    version: i64,
    reason: &str,
) -> Result<Option<i64>> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT version FROM model_versions WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!("no model version {name}@{version}")));
    }
    let previous: Option<i64> = sqlx::query_scalar("SELECT version FROM aliases WHERE name = $1 AND alias = $2")
        .bind(name)
        .bind(alias)
        .fetch_optional(&mut **tx)
        .await?;
    let at = now();
    sqlx::query(
        "INSERT INTO aliases (name, alias, version, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(alias)
    .bind(version)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO alias_events (name, alias, version, previous_version, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(name)
    .bind(alias)
    .bind(version)
    .bind(previous)
    .bind(reason)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    Ok(previous)
}
