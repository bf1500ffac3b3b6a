use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_core::{BytesHasher, ContentHash};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, PutOptions, PutPayload};

use crate::{Result, StoreError};

/// Where a store keeps its artifacts: immutable blobs named by the sha256 of their bytes, under
/// `sha256/<first two hex>/<remaining hex>` in a local folder or in an S3-compatible bucket.
/// Both backends check an artifact's bytes against its name on every read.
#[derive(Clone, Debug)]
pub enum Artifacts {
    /// A folder on this machine (`<home>/artifacts`), the default.
    Local(LocalArtifacts),
    /// An S3-compatible bucket and prefix (`KEEL_ARTIFACTS_URL=s3://bucket/prefix`).
    ObjectStore(ObjectStoreArtifacts),
}

impl Artifacts {
    /// Stores bytes and returns their hash. Storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: &[u8]) -> Result<ContentHash> {
        match self {
            Artifacts::Local(a) => a.put(bytes),
            Artifacts::ObjectStore(a) => a.put(bytes).await,
        }
    }

    /// Reads an artifact and checks its bytes against its name.
    pub async fn get(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        match self {
            Artifacts::Local(a) => a.get(hash),
            Artifacts::ObjectStore(a) => a.get(hash).await,
        }
    }

    /// A writer for an artifact too large to hold in memory: its bytes go to a temporary file
    /// (in the artifacts' own `tmp` folder, or the system's for an object store) and are hashed
    /// on the way; [`Artifacts::put_written`] stores it.
    pub fn writer(&self) -> Result<ArtifactWriter> {
        let dir = match self {
            Artifacts::Local(a) => a.root.join("tmp"),
            Artifacts::ObjectStore(_) => std::env::temp_dir(),
        };
        let file = tempfile::NamedTempFile::new_in(&dir)
            .map_err(io(format!("cannot create a temporary artifact file in {}", dir.display())))?;
        Ok(ArtifactWriter { file: BufWriter::with_capacity(1 << 20, file), hash: BytesHasher::default(), size: 0 })
    }

    /// Stores what `w` wrote, as [`Artifacts::put`] stores bytes, without reading it into memory;
    /// returns its hash and size.
    pub async fn put_written(&self, w: ArtifactWriter) -> Result<(ContentHash, u64)> {
        let (hash, size) = (w.hash.clone().finish(), w.size);
        let tmp = w.file.into_inner().map_err(|e| io("cannot write artifact")(e.into_error()))?;
        match self {
            Artifacts::Local(a) => a.persist(tmp, &hash)?,
            Artifacts::ObjectStore(a) => a.upload(tmp, &hash, size).await?,
        }
        Ok((hash, size))
    }

    /// The hashes of every artifact present, from the backend's own listing (not the database).
    pub async fn list(&self) -> Result<Vec<ContentHash>> {
        match self {
            Artifacts::Local(a) => a.list(),
            Artifacts::ObjectStore(a) => a.list().await,
        }
    }

    /// How many temporary files are present (from writes in progress or killed writers).
    /// Always 0 on an object store, which has none.
    pub fn temp_files(&self) -> Result<u64> {
        match self {
            Artifacts::Local(a) => a.temp_files(),
            Artifacts::ObjectStore(_) => Ok(0),
        }
    }

    /// Where an artifact lives, for people: a file path, or an `s3://` URL.
    pub fn location(&self, hash: &ContentHash) -> String {
        match self {
            Artifacts::Local(a) => a.path(hash).display().to_string(),
            Artifacts::ObjectStore(a) => a.url(hash),
        }
    }
}

/// The largest artifact uploaded in one PUT, and the part size of larger ones (S3 takes parts
/// of 5 MiB to 5 GiB, at most 10,000 of them: 16 MiB parts allow artifacts up to 156 GiB).
pub const ONE_PUT_BYTES: u64 = 16 << 20;

/// An artifact being written in pieces ([`Artifacts::writer`]); nothing is stored until
/// [`Artifacts::put_written`], and a writer dropped (or a process killed) before then leaves
/// only a temporary file, which the next open of a local store sweeps once it is an hour old.
pub struct ArtifactWriter {
    file: BufWriter<tempfile::NamedTempFile>,
    hash: BytesHasher,
    size: u64,
}

impl Write for ArtifactWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A content-addressed folder: `<root>/sha256/<first two hex>/<remaining hex>`.
///
/// Writes go to a temporary file in `<root>/tmp`, are fsynced, then renamed into place, and the
/// folder is fsynced: a reader sees either no file or the whole file.
#[derive(Clone, Debug)]
pub struct LocalArtifacts {
    root: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl LocalArtifacts {
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["sha256", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io(format!("cannot create {}", p.display())))?;
        }
        let me = Self { root: root.to_owned() };
        me.sweep_temp_files(std::time::Duration::from_secs(3600));
        Ok(me)
    }

    /// Removes temporary files older than `age`: what writers killed mid-write left behind.
    /// Younger ones may belong to a writer still at work, so they stay.
    fn sweep_temp_files(&self, age: std::time::Duration) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else { return };
        for e in entries.flatten() {
            let old = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > age));
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// How many temporary files are present (from writes in progress or killed writers).
    pub fn temp_files(&self) -> Result<u64> {
        let dir = self.root.join("tmp");
        let entries = fs::read_dir(&dir).map_err(io(format!("cannot list {}", dir.display())))?;
        Ok(entries.count() as u64)
    }

    pub fn path(&self, hash: &ContentHash) -> PathBuf {
        let h = hash.as_str();
        self.root.join("sha256").join(&h[..2]).join(&h[2..])
    }

    /// Stores bytes and returns their hash. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<ContentHash> {
        let hash = ContentHash::of(bytes);
        if self.path(&hash).exists() {
            return Ok(hash);
        }
        let tmp_dir = self.root.join("tmp");
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io("cannot create a temporary artifact file"))?;
        tmp.write_all(bytes).map_err(io("cannot write artifact"))?;
        self.persist(tmp, &hash)?;
        Ok(hash)
    }

    /// Moves a written temporary file into place as `hash` (fsynced first), unless it is there.
    fn persist(&self, tmp: tempfile::NamedTempFile, hash: &ContentHash) -> Result<()> {
        let dest = self.path(hash);
        if dest.exists() {
            return Ok(());
        }
        let dir = dest.parent().expect("artifact path has a parent");
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        tmp.as_file().sync_all().map_err(io("cannot fsync artifact"))?;
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            context: format!("cannot move artifact to {}", dest.display()),
            source: e.error,
        })?;
        sync_dir(dir)
    }

    /// Reads an artifact and checks its bytes against its name.
    pub fn get(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingArtifact(hash.to_string()));
            }
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        };
        verify(hash, bytes)
    }

    /// The hashes of the files under `sha256/`; names that are not a hash are ignored.
    pub fn list(&self) -> Result<Vec<ContentHash>> {
        let top = self.root.join("sha256");
        let mut out = Vec::new();
        for dir in fs::read_dir(&top).map_err(io(format!("cannot list {}", top.display())))? {
            let dir = dir.map_err(io(format!("cannot list {}", top.display())))?;
            let Some(head) = dir.file_name().to_str().map(str::to_owned) else { continue };
            if !dir.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = dir.path();
            for file in fs::read_dir(&path).map_err(io(format!("cannot list {}", path.display())))? {
                let file = file.map_err(io(format!("cannot list {}", path.display())))?;
                if let Some(hash) =
                    file.file_name().to_str().and_then(|tail| ContentHash::parse(&format!("{head}{tail}")))
                {
                    out.push(hash);
                }
            }
        }
        Ok(out)
    }
}

fn verify(hash: &ContentHash, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let actual = ContentHash::of(&bytes);
    if &actual != hash {
        return Err(StoreError::CorruptArtifact { hash: hash.to_string(), actual: actual.to_string() });
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("cannot fsync {}", dir.display())))?;
    Ok(())
}

/// Artifacts in an S3-compatible bucket, through the `object_store` crate, under
/// `<prefix>/sha256/<first two hex>/<remaining hex>`: the local folder's layout.
///
/// Endpoint, region and credentials come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`
/// and `AWS_ALLOW_HTTP=true` for a local S3 such as MinIO or moto), or from explicit
/// `object_store` configuration keys (`aws_endpoint`, `aws_allow_http`, ...), which win.
#[derive(Clone, Debug)]
pub struct ObjectStoreArtifacts {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket` or `s3://bucket/prefix`, without a trailing slash.
    url: String,
    /// `<prefix>/sha256`.
    root: ObjectPath,
}

impl ObjectStoreArtifacts {
    /// Opens `s3://bucket[/prefix]`. Nothing is sent until the first read or write.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self> {
        let invalid = || {
            StoreError::Invalid(format!(
                "artifact store URL {url:?} is not valid: use s3://BUCKET or s3://BUCKET/PREFIX (KEEL_ARTIFACTS_URL)"
            ))
        };
        let rest = url.strip_prefix("s3://").ok_or_else(invalid)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err(invalid());
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key = key.parse().map_err(remote(format!("artifact store option {key:?}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(remote(format!("cannot configure the artifact store {url}")))?;
        let root = ObjectPath::parse(prefix).map_err(|_| invalid())?.join("sha256");
        let url = if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
        Ok(Self { store: Arc::new(store), url, root })
    }

    /// The object store itself, for tools and tests that need to reach past this interface.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// An artifact's key in the bucket.
    pub fn key(&self, hash: &ContentHash) -> ObjectPath {
        let h = hash.as_str();
        self.root.clone().join(&h[..2]).join(&h[2..])
    }

    /// An artifact's `s3://` URL.
    pub fn url(&self, hash: &ContentHash) -> String {
        let h = hash.as_str();
        format!("{}/sha256/{}/{}", self.url, &h[..2], &h[2..])
    }

    /// Stores bytes and returns their hash. Storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: &[u8]) -> Result<ContentHash> {
        let hash = ContentHash::of(bytes);
        let key = self.key(&hash);
        if self.exists(&hash).await? {
            return Ok(hash);
        }
        // One PUT, no temporary object and no rename: an object store makes an object visible
        // only once its whole body has arrived and been stored durably, so a writer killed
        // mid-upload leaves nothing, and readers see no object or the whole object. (Multipart
        // uploads, which can leave parts behind, are not used; one PUT takes up to 5 GiB.)
        self.store
            .put_opts(&key, PutPayload::from(bytes.to_vec()), PutOptions::default())
            .await
            .map_err(remote(format!("cannot write {}", self.url(&hash))))?;
        Ok(hash)
    }

    /// Whether the object for `hash` is in the bucket (a HEAD request).
    async fn exists(&self, hash: &ContentHash) -> Result<bool> {
        match self.store.get_opts(&self.key(hash), GetOptions::new().with_head(true)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote(format!("cannot look up {}", self.url(hash)))(e)),
        }
    }

    /// Uploads a written temporary file as `hash`, unless the object is there: in one PUT up to
    /// [`ONE_PUT_BYTES`], else as a multipart upload of parts of that size, read from the file one
    /// at a time (an object appears only when the upload completes; a writer killed before that
    /// leaves parts the bucket's lifecycle rules remove, and no object).
    async fn upload(&self, tmp: tempfile::NamedTempFile, hash: &ContentHash, size: u64) -> Result<()> {
        let key = self.key(hash);
        if self.exists(hash).await? {
            return Ok(());
        }
        let context = || format!("cannot write {}", self.url(hash));
        let mut file = tmp.reopen().map_err(io("cannot reopen a temporary artifact file"))?;
        let part = |file: &mut fs::File| -> Result<Vec<u8>> {
            let mut buf = Vec::with_capacity(ONE_PUT_BYTES.min(size) as usize);
            Read::by_ref(file)
                .take(ONE_PUT_BYTES)
                .read_to_end(&mut buf)
                .map_err(io("cannot read a temporary artifact file"))?;
            Ok(buf)
        };
        if size <= ONE_PUT_BYTES {
            let bytes = part(&mut file)?;
            self.store
                .put_opts(&key, PutPayload::from(bytes), PutOptions::default())
                .await
                .map_err(remote(context()))?;
            return Ok(());
        }
        let mut upload = self.store.put_multipart_opts(&key, Default::default()).await.map_err(remote(context()))?;
        let sent: Result<()> = async {
            loop {
                let bytes = part(&mut file)?;
                if bytes.is_empty() {
                    break;
                }
                upload.put_part(PutPayload::from(bytes)).await.map_err(remote(context()))?;
            }
            upload.complete().await.map_err(remote(context()))?;
            Ok(())
        }
        .await;
        if sent.is_err() {
            let _ = upload.abort().await;
        }
        sent
    }

    /// Reads an artifact and checks its bytes against its name.
    pub async fn get(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        let context = || format!("cannot read {}", self.url(hash));
        let bytes = match self.store.get_opts(&self.key(hash), GetOptions::default()).await {
            Ok(r) => r.bytes().await.map_err(remote(context()))?,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::MissingArtifact(hash.to_string())),
            Err(e) => return Err(remote(context())(e)),
        };
        verify(hash, bytes.to_vec())
    }

    /// The hashes of the objects under `<prefix>/sha256/`; names that are not a hash are ignored.
    pub async fn list(&self) -> Result<Vec<ContentHash>> {
        let context = || format!("cannot list {}/sha256", self.url);
        // One listing per two-hex-digit folder (at most 256 + 1 requests, each paginated by
        // object_store), which needs no stream combinators.
        let top = self.store.list_with_delimiter(Some(&self.root)).await.map_err(remote(context()))?;
        let mut out = Vec::new();
        for dir in &top.common_prefixes {
            let Some(head) = dir.filename().map(str::to_owned) else { continue };
            let inner = self.store.list_with_delimiter(Some(dir)).await.map_err(remote(context()))?;
            out.extend(
                inner
                    .objects
                    .iter()
                    .filter_map(|o| o.location.filename().and_then(|t| ContentHash::parse(&format!("{head}{t}")))),
            );
        }
        Ok(out)
    }
}

fn remote(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::ObjectStore { context, source: Box::new(source) }
}
