use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Row};

use crate::artifacts::{LocalArtifacts, ObjectStoreArtifacts};
use crate::tx::write_tx;
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

/// Settings every SQLite connection gets: WAL (readers never block the writer), full fsync at
/// commit, enforced foreign keys, a generous wait for the write lock, and reads of the first
/// 256 MiB of the file through a memory map instead of one `pread` per page (writes still go
/// through the journal as before; bulk reads such as a training split's cached vectors take
/// half the time).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
    PRAGMA busy_timeout = 30000; PRAGMA mmap_size = 268435456;";

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

    /// A writer for an artifact too large to hold in memory; [`Store::put_written_artifact`]
    /// stores it.
    pub fn artifact_writer(&self) -> Result<crate::ArtifactWriter> {
        self.artifacts.writer()
    }

    /// Stores what `w` wrote as an artifact of `kind`, as [`Store::put_artifact`] stores bytes.
    pub async fn put_written_artifact(&self, kind: &str, w: crate::ArtifactWriter) -> Result<ContentHash> {
        let (hash, size) = self.artifacts.put_written(w).await?;
        sqlx::query("INSERT INTO artifacts (sha256, kind, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING")
            .bind(hash.as_str())
            .bind(kind)
            .bind(size as i64)
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

    // ---- embedding cache ----

    /// Cached vectors for these text hashes (same order; `None` where absent).
    ///
    /// The distinct hashes are asked for in key order, so the lookups of one query walk the
    /// cache's B-tree forwards instead of jumping between its pages. Reading a training split's
    /// 8,057 vectors this way (with SQLite's memory-mapped reads) takes about 0.08 s where it
    /// took 0.2–0.3 s on a quiet machine and up to 1 s beside the encoder loading.
    pub async fn cached_embeddings(
        &self,
        encoder_id: &str,
        text_hashes: &[ContentHash],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let mut wanted: Vec<&str> = text_hashes.iter().map(ContentHash::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found: HashMap<String, Vec<f32>> = HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(500) {
            // SQLite takes plain positional `?`: with `$N` names its driver looks each name up
            // among the statement's parameters, a quarter of the read's time at 500 of them.
            let (first, marks) = match self.backend {
                Backend::Sqlite => ("?".to_owned(), vec!["?".to_owned(); chunk.len()]),
                Backend::Postgres => ("$1".to_owned(), (2..chunk.len() + 2).map(|i| format!("${i}")).collect()),
            };
            let marks = marks.join(",");
            let sql = format!(
                "SELECT text_sha256, vector FROM embedding_cache WHERE encoder_id = {first} AND text_sha256 IN ({marks})"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(encoder_id);
            for h in chunk {
                q = q.bind(*h);
            }
            for row in q.fetch_all(&self.pool).await? {
                let blob: Vec<u8> = row.try_get("vector")?;
                let v = blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                found.insert(row.try_get("text_sha256")?, v);
            }
        }
        // Each vector moves to the last position that asks for it and is copied to the others.
        let mut uses: HashMap<&str, usize> = HashMap::with_capacity(wanted.len());
        for h in text_hashes {
            *uses.entry(h.as_str()).or_default() += 1;
        }
        let out = text_hashes
            .iter()
            .map(|h| {
                let left = uses.get_mut(h.as_str()).expect("counted above");
                *left -= 1;
                if *left == 0 { found.remove(h.as_str()) } else { found.get(h.as_str()).cloned() }
            })
            .collect();
        Ok(out)
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
