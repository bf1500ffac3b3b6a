use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Row, Transaction};

use crate::artifacts::{LocalArtifacts, ObjectStoreArtifacts};
use crate::{Artifacts, Backend, Result, StoreError, now};

/// A project store: the database and the artifact folder under one home directory.
#[derive(Clone, Debug)]
pub struct Store {
    home: PathBuf,
    // Crate-visible so each area's methods can live in their own file (llm.rs, ...).
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    artifacts: Artifacts,
}

/// How to open a store: which database, and where the artifacts live.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// `postgres://...`; `None` for the SQLite file `<home>/keel.db`.
    pub database_url: Option<String>,
    /// `s3://bucket[/prefix]` for an S3-compatible bucket; `None` for the folder `<home>/artifacts`.
    pub artifacts_url: Option<String>,
    /// `object_store` S3 settings (`aws_endpoint`, `aws_allow_http`, `aws_region`,
    /// `aws_access_key_id`, ...), applied over the standard `AWS_*` environment variables.
    pub artifacts_options: Vec<(String, String)>,
}

impl StoreOptions {
    /// `KEEL_DATABASE_URL` and `KEEL_ARTIFACTS_URL`; an empty variable counts as unset.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|u| !u.trim().is_empty());
        Self {
            database_url: var("KEEL_DATABASE_URL"),
            artifacts_url: var("KEEL_ARTIFACTS_URL"),
            artifacts_options: Vec::new(),
        }
    }
}

/// Starts a transaction that holds the write lock from its first statement (SQLite's
/// `BEGIN IMMEDIATE`), so that read-then-write transactions queue instead of failing.
pub(crate) async fn write_tx(pool: &AnyPool, backend: Backend) -> Result<Transaction<'static, sqlx::Any>> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}

/// Settings every SQLite connection gets: WAL (readers never block the writer), full fsync at
/// commit, enforced foreign keys, and a generous wait for the write lock.
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewDataset {
    pub id: ContentHash,
    pub name: String,
    pub source: String,
    pub source_sha256: ContentHash,
    pub rows_read: u64,
    pub n_records: u64,
    pub n_quarantined: u64,
    pub records_artifact: ContentHash,
    pub quarantine_artifact: ContentHash,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    #[serde(flatten)]
    pub fields: NewDataset,
    pub created_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub params: serde_json::Value,
    pub metrics: Option<serde_json::Value>,
    pub dataset_id: Option<String>,
    pub error: Option<String>,
    pub code_version: String,
    pub host: String,
    pub started_at: String,
    pub ended_at: Option<String>,
}

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

/// One served prediction, as the prediction log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub id: String,
    pub at: String,
    pub model: String,
    pub input_sha256: String,
    pub input_text: String,
    pub label: String,
    pub scores: serde_json::Value,
    pub latency_ms: f64,
    pub degraded: bool,
}

/// The result of `Store::check`: what is wrong, if anything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreCheck {
    pub artifacts_checked: u64,
    pub problems: Vec<String>,
    /// Temporary files left by writers that were killed mid-write. Harmless: no row names them,
    /// and opening the store removes those older than an hour.
    pub leftover_temp_files: u64,
}

fn run_from_row(row: &AnyRow) -> Result<Run> {
    let metrics: Option<String> = row.try_get("metrics")?;
    Ok(Run {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        params: serde_json::from_str(row.try_get("params")?)?,
        metrics: metrics.as_deref().map(serde_json::from_str).transpose()?,
        dataset_id: row.try_get("dataset_id")?,
        error: row.try_get("error")?,
        code_version: row.try_get("code_version")?,
        host: row.try_get("host")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
    })
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

fn parse_hash(s: &str) -> Result<ContentHash> {
    ContentHash::parse(s).ok_or_else(|| StoreError::NotFound(format!("stored hash {s:?} is malformed")))
}

impl Store {
    /// Opens (creating if needed) the store under `home`. The database is `home/keel.db`
    /// unless `KEEL_DATABASE_URL` names a PostgreSQL database; artifacts are in `home/artifacts`
    /// unless `KEEL_ARTIFACTS_URL` names an S3 bucket (see [`StoreOptions`]).
    pub async fn open(home: &Path) -> Result<Self> {
        Self::open_with_options(home, &StoreOptions::from_env()).await
    }

    /// Opens the store under `home` with an explicit database URL (`postgres://...`), or the
    /// SQLite file `home/keel.db` when `database_url` is `None`; artifacts in `home/artifacts`.
    pub async fn open_with(home: &Path, database_url: Option<&str>) -> Result<Self> {
        let options = StoreOptions { database_url: database_url.map(str::to_owned), ..StoreOptions::default() };
        Self::open_with_options(home, &options).await
    }

    /// Opens the store under `home` as `options` say; the environment plays no part, except
    /// the `AWS_*` variables when artifacts are in S3.
    pub async fn open_with_options(home: &Path, options: &StoreOptions) -> Result<Self> {
        let database_url = options.database_url.as_deref();
        std::fs::create_dir_all(home).map_err(|source| StoreError::Io {
            context: format!("cannot create store folder {}", home.display()),
            source,
        })?;
        sqlx::any::install_default_drivers();
        let (backend, opts) = match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                (Backend::Postgres, AnyConnectOptions::from_str(url)?)
            }
            Some(url) => {
                return Err(StoreError::Invalid(format!(
                    "KEEL_DATABASE_URL must start with postgres:// (got {:?}); unset it to use SQLite under --home",
                    url.split(':').next().unwrap_or("")
                )));
            }
            None => {
                let sqlite = SqliteConnectOptions::new().filename(home.join("keel.db")).create_if_missing(true);
                (Backend::Sqlite, AnyConnectOptions::from_url(&sqlite.to_url_lossy())?)
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        crate::schema::migrate(&pool, backend).await?;
        let artifacts = match &options.artifacts_url {
            None => Artifacts::Local(LocalArtifacts::open(&home.join("artifacts"))?),
            Some(url) => Artifacts::ObjectStore(ObjectStoreArtifacts::open(url, &options.artifacts_options)?),
        };
        Ok(Self { home: home.to_owned(), pool, backend, artifacts })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    /// Writes bytes as an artifact (the artifact first, then its row) and returns the hash.
    pub async fn put_artifact(&self, kind: &str, bytes: &[u8]) -> Result<ContentHash> {
        let hash = self.artifacts.put(bytes).await?;
        sqlx::query("INSERT INTO artifacts (sha256, kind, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING")
            .bind(hash.as_str())
            .bind(kind)
            .bind(bytes.len() as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(hash)
    }

    /// Reads an artifact, checked against its hash.
    pub async fn read_artifact(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        self.artifacts.get(hash).await
    }

    // ---- datasets ----

    /// Records a dataset version. Recording the same version again changes nothing.
    pub async fn put_dataset(&self, d: &NewDataset) -> Result<Dataset> {
        sqlx::query(
            "INSERT INTO datasets (id, name, source, source_sha256, rows_read, n_records, n_quarantined, records_artifact, quarantine_artifact, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(d.id.as_str())
        .bind(&d.name)
        .bind(&d.source)
        .bind(d.source_sha256.as_str())
        .bind(d.rows_read as i64)
        .bind(d.n_records as i64)
        .bind(d.n_quarantined as i64)
        .bind(d.records_artifact.as_str())
        .bind(d.quarantine_artifact.as_str())
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.dataset(d.id.as_str()).await
    }

    pub async fn dataset(&self, id: &str) -> Result<Dataset> {
        let row = sqlx::query("SELECT * FROM datasets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no dataset version {id}")))?;
        Ok(Dataset {
            fields: NewDataset {
                id: parse_hash(row.try_get("id")?)?,
                name: row.try_get("name")?,
                source: row.try_get("source")?,
                source_sha256: parse_hash(row.try_get("source_sha256")?)?,
                rows_read: row.try_get::<i64, _>("rows_read")? as u64,
                n_records: row.try_get::<i64, _>("n_records")? as u64,
                n_quarantined: row.try_get::<i64, _>("n_quarantined")? as u64,
                records_artifact: parse_hash(row.try_get("records_artifact")?)?,
                quarantine_artifact: parse_hash(row.try_get("quarantine_artifact")?)?,
            },
            created_at: row.try_get("created_at")?,
        })
    }

    // ---- runs ----

    pub async fn start_run(
        &self,
        kind: &str,
        params: &serde_json::Value,
        code_version: &str,
        host: &str,
    ) -> Result<String> {
        let id = format!("run-{}", uuid_like());
        sqlx::query("INSERT INTO runs (id, kind, status, params, code_version, host, started_at) VALUES ($1, $2, 'running', $3, $4, $5, $6)")
            .bind(&id)
            .bind(kind)
            .bind(params.to_string())
            .bind(code_version)
            .bind(host)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    pub async fn set_run_dataset(&self, run_id: &str, dataset_id: &ContentHash) -> Result<()> {
        sqlx::query("UPDATE runs SET dataset_id = $1 WHERE id = $2")
            .bind(dataset_id.as_str())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        metrics: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE runs SET status = $1, metrics = $2, error = $3, ended_at = $4 WHERE id = $5")
            .bind(status.as_str())
            .bind(metrics.map(|m| m.to_string()))
            .bind(error)
            .bind(now())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The most recent runs first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn run(&self, id: &str) -> Result<Run> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no run {id}")))?;
        run_from_row(&row)
    }

    // ---- models ----

    /// Registers a model version, or returns the existing one with the same input key (then
    /// the flag is false). The model row, the version number and the version row are one
    /// transaction; concurrent registrations get distinct numbers.
    pub async fn register_model_version(&self, v: &NewModelVersion) -> Result<(ModelVersion, bool)> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
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
        sqlx::query(
            "INSERT INTO models (name, next_version, created_at) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&v.name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        // The UPDATE takes the model row's lock (PostgreSQL) or the database write lock
        // (SQLite) before the number is read, so no two registrations get the same number.
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

    // ---- embedding cache ----

    /// Cached vectors for these text hashes (same order; `None` where absent).
    pub async fn cached_embeddings(
        &self,
        encoder_id: &str,
        text_hashes: &[ContentHash],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let mut found: HashMap<String, Vec<f32>> = HashMap::new();
        for chunk in text_hashes.chunks(500) {
            let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let marks = marks.join(",");
            let sql = format!(
                "SELECT text_sha256, vector FROM embedding_cache WHERE encoder_id = $1 AND text_sha256 IN ({marks})"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(encoder_id);
            for h in chunk {
                q = q.bind(h.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                let blob: Vec<u8> = row.try_get("vector")?;
                let v = blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                found.insert(row.try_get("text_sha256")?, v);
            }
        }
        Ok(text_hashes.iter().map(|h| found.get(h.as_str()).cloned()).collect())
    }

    /// Stores vectors in one transaction.
    pub async fn cache_embeddings(&self, encoder_id: &str, items: &[(ContentHash, &[f32])]) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        for (h, v) in items {
            let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            sqlx::query(
                "INSERT INTO embedding_cache (encoder_id, text_sha256, vector) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(encoder_id)
            .bind(h.as_str())
            .bind(blob)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- integrity ----

    /// Checks that the database is sound, that no row points at a missing row, and that every
    /// artifact a row names is in the artifact store (local folder or bucket) and is intact.
    pub async fn check(&self) -> Result<StoreCheck> {
        let mut report = StoreCheck::default();
        if self.backend == Backend::Sqlite {
            let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&self.pool).await?;
            if integrity != "ok" {
                report.problems.push(format!("database integrity: {integrity}"));
            }
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_check").fetch_all(&self.pool).await?;
            for table in tables {
                report.problems.push(format!("dangling reference in table {table}"));
            }
        }
        // PostgreSQL enforces foreign keys itself; these hold on both backends.
        let orphans: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM aliases a LEFT JOIN model_versions v ON a.name = v.name AND a.version = v.version
             WHERE v.name IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        if orphans > 0 {
            report.problems.push(format!("{orphans} aliases point at missing model versions"));
        }
        // Rows first, then the listing: an artifact is stored before its row is written, so
        // every row read here names an artifact that the listing already includes.
        let hashes: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM artifacts").fetch_all(&self.pool).await?;
        let present: HashSet<ContentHash> = self.artifacts.list().await?.into_iter().collect();
        for h in hashes {
            report.artifacts_checked += 1;
            let hash = match parse_hash(&h) {
                Ok(hash) => hash,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            if !present.contains(&hash) {
                report.problems.push(StoreError::MissingArtifact(h).to_string());
            } else if let Err(e) = self.artifacts.get(&hash).await {
                // Re-hashes the bytes.
                report.problems.push(e.to_string());
            }
        }
        report.leftover_temp_files = self.artifacts.temp_files()?;
        Ok(report)
    }

    // ---- prediction log ----

    /// Appends predictions in one transaction (one round trip per row, one commit per batch).
    pub async fn log_predictions(&self, batch: &[PredictionRecord]) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        for p in batch {
            sqlx::query(
                "INSERT INTO predictions (id, at, model, input_sha256, input_text, label, scores, latency_ms, degraded)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&p.id)
            .bind(&p.at)
            .bind(&p.model)
            .bind(&p.input_sha256)
            .bind(&p.input_text)
            .bind(&p.label)
            .bind(p.scores.to_string())
            .bind(p.latency_ms)
            .bind(i64::from(p.degraded))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Attaches a true label to a logged prediction.
    pub async fn add_feedback(&self, prediction_id: &str, label: &str) -> Result<()> {
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM predictions WHERE id = $1")
            .bind(prediction_id)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("no logged prediction {prediction_id}")));
        }
        sqlx::query("INSERT INTO feedback (prediction_id, label, at) VALUES ($1, $2, $3)")
            .bind(prediction_id)
            .bind(label)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Logged predictions in a time window `[since, until)`, oldest first.
    pub async fn predictions(&self, since: &str, until: &str) -> Result<Vec<PredictionRecord>> {
        let rows = sqlx::query("SELECT * FROM predictions WHERE at >= $1 AND at < $2 ORDER BY at, id")
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PredictionRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    model: r.try_get("model")?,
                    input_sha256: r.try_get("input_sha256")?,
                    input_text: r.try_get("input_text")?,
                    label: r.try_get("label")?,
                    scores: serde_json::from_str(r.try_get("scores")?)?,
                    latency_ms: r.try_get("latency_ms")?,
                    degraded: r.try_get::<i64, _>("degraded")? != 0,
                })
            })
            .collect()
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

/// A time-ordered unique id: milliseconds since the epoch and random bits.
fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut buf = [0u8; 6];
    // Randomness from the OS through std's hasher seed; no extra dependency needed.
    let r = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), ms);
    buf.copy_from_slice(&r.to_le_bytes()[..6]);
    format!("{ms:013x}-{}", buf.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
