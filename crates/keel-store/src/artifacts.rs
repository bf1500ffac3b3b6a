use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use keel_core::ContentHash;

use crate::{Result, StoreError};

/// A content-addressed folder: `<root>/sha256/<first two hex>/<remaining hex>`.
///
/// Writes go to a temporary file in `<root>/tmp`, are fsynced, then renamed into place, and the
/// folder is fsynced: a reader sees either no file or the whole file.
#[derive(Clone, Debug)]
pub struct Artifacts {
    root: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl Artifacts {
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
        let dest = self.path(&hash);
        if dest.exists() {
            return Ok(hash);
        }
        let dir = dest.parent().expect("artifact path has a parent");
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let tmp_dir = self.root.join("tmp");
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io("cannot create a temporary artifact file"))?;
        tmp.write_all(bytes).map_err(io("cannot write artifact"))?;
        tmp.as_file().sync_all().map_err(io("cannot fsync artifact"))?;
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            context: format!("cannot move artifact to {}", dest.display()),
            source: e.error,
        })?;
        sync_dir(dir)?;
        Ok(hash)
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
        let actual = ContentHash::of(&bytes);
        if &actual != hash {
            return Err(StoreError::CorruptArtifact { hash: hash.to_string(), actual: actual.to_string() });
        }
        Ok(bytes)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("cannot fsync {}", dir.display())))?;
    Ok(())
}
