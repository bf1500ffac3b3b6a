use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use crate::{Artifacts, Result, StoreError, now};

/// A project store: the database and the artifact folder under one home directory.
#[derive(Clone, Debug)]
pub struct Store {
    home: PathBuf,
    pool: SqlitePool,
    artifacts: Artifacts,
}

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

/// The result of `Store::check`: what is wrong, if anything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreCheck {
    pub artifacts_checked: u64,
    pub problems: Vec<String>,
}

fn parse_hash(s: &str) -> Result<ContentHash> {
    ContentHash::parse(s).ok_or_else(|| StoreError::NotFound(format!("stored hash {s:?} is malformed")))
}

impl Store {
    /// Opens (creating if needed) the store under `home`.
    pub async fn open(home: &Path) -> Result<Self> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::Io {
            context: format!("cannot create store folder {}", home.display()),
            source,
        })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(home.join("keel.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        crate::schema::migrate(&pool).await?;
        let artifacts = Artifacts::open(&home.join("artifacts"))?;
        Ok(Self { home: home.to_owned(), pool, artifacts })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    /// Writes bytes as an artifact (file first, then its row) and returns the hash.
    pub async fn put_artifact(&self, kind: &str, bytes: &[u8]) -> Result<ContentHash> {
        let hash = self.artifacts.put(bytes)?;
        sqlx::query("INSERT INTO artifacts (sha256, kind, size, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING")
            .bind(hash.as_str())
            .bind(kind)
            .bind(bytes.len() as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(hash)
    }

    pub fn read_artifact(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        self.artifacts.get(hash)
    }

    // ---- datasets ----

    /// Records a dataset version. Recording the same version again changes nothing.
    pub async fn put_dataset(&self, d: &NewDataset) -> Result<Dataset> {
        sqlx::query(
            "INSERT INTO datasets (id, name, source, source_sha256, rows_read, n_records, n_quarantined, records_artifact, quarantine_artifact, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
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
        let row = sqlx::query("SELECT * FROM datasets WHERE id = ?")
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
        sqlx::query("INSERT INTO runs (id, kind, status, params, code_version, host, started_at) VALUES (?, ?, 'running', ?, ?, ?, ?)")
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
        sqlx::query("UPDATE runs SET dataset_id = ? WHERE id = ?")
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
        sqlx::query("UPDATE runs SET status = ?, metrics = ?, error = ?, ended_at = ? WHERE id = ?")
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
        let rows = sqlx::query("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }

    // ---- models ----

    /// Registers a model version, or returns the existing one with the same input key.
    /// The model row, the version number and the version row are one transaction.
    pub async fn register_model_version(&self, v: &NewModelVersion) -> Result<(ModelVersion, bool)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO models (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(&v.name)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT version FROM model_versions WHERE name = ? AND input_key = ?")
                .bind(&v.name)
                .bind(v.input_key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let created = existing.is_none();
        let version = match existing {
            Some(version) => version,
            None => {
                let next: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?")
                        .bind(&v.name)
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(
                    "INSERT INTO model_versions (name, version, input_key, run_id, dataset_id, encoder_id, head_artifact, metrics, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&v.name)
                .bind(next)
                .bind(v.input_key.as_str())
                .bind(&v.run_id)
                .bind(v.dataset_id.as_str())
                .bind(&v.encoder_id)
                .bind(v.head_artifact.as_str())
                .bind(v.metrics.to_string())
                .bind(now())
                .execute(&mut *tx)
                .await?;
                next
            }
        };
        tx.commit().await?;
        Ok((self.model_version(&v.name, version).await?, created))
    }

    /// Looks up a version made from exactly these inputs, if one exists.
    pub async fn find_model_version(&self, name: &str, input_key: &ContentHash) -> Result<Option<ModelVersion>> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM model_versions WHERE name = ? AND input_key = ?")
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
        let row = sqlx::query("SELECT * FROM model_versions WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no model version {name}@{version}")))?;
        self.version_from_row(&row).await
    }

    async fn version_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<ModelVersion> {
        let name: String = row.try_get("name")?;
        let version: i64 = row.try_get("version")?;
        let aliases: Vec<String> =
            sqlx::query_scalar("SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias")
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

    /// Points `alias` of model `name` at `version`, in one transaction.
    pub async fn set_alias(&self, name: &str, alias: &str, version: i64) -> Result<()> {
        self.model_version(name, version).await?;
        sqlx::query(
            "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(alias)
        .bind(version)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Resolves `NAME`, `NAME@VERSION` or `NAME@ALIAS`. A bare name means its `production`
    /// alias when set, otherwise its latest version.
    pub async fn resolve(&self, spec: &str) -> Result<ModelVersion> {
        let (name, which) = spec.split_once('@').map_or((spec, None), |(n, w)| (n, Some(w)));
        if let Some(v) = which.and_then(|w| w.parse::<i64>().ok()) {
            return self.model_version(name, v).await;
        }
        let alias = which.unwrap_or("production");
        let aliased: Option<i64> = sqlx::query_scalar("SELECT version FROM aliases WHERE name = ? AND alias = ?")
            .bind(name)
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        let version = match (aliased, which) {
            (Some(v), _) => v,
            (None, Some(_)) => return Err(StoreError::NotFound(format!("model {name} has no alias {alias:?}"))),
            (None, None) => sqlx::query_scalar("SELECT MAX(version) FROM model_versions WHERE name = ?")
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
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT text_sha256, vector FROM embedding_cache WHERE encoder_id = ? AND text_sha256 IN ({marks})"
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
        let mut tx = self.pool.begin().await?;
        for (h, v) in items {
            let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            sqlx::query(
                "INSERT INTO embedding_cache (encoder_id, text_sha256, vector) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
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

    /// Checks that the database is sound and that every artifact a row names exists and is
    /// intact.
    pub async fn check(&self) -> Result<StoreCheck> {
        let mut report = StoreCheck::default();
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&self.pool).await?;
        if integrity != "ok" {
            report.problems.push(format!("database integrity: {integrity}"));
        }
        let fk: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check").fetch_all(&self.pool).await?;
        for row in fk {
            let table: String = row.try_get(0)?;
            report.problems.push(format!("dangling reference in table {table}"));
        }
        let hashes: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM artifacts").fetch_all(&self.pool).await?;
        for h in hashes {
            report.artifacts_checked += 1;
            match parse_hash(&h).and_then(|h| self.artifacts.get(&h)) {
                Ok(_) => {}
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        Ok(report)
    }
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
