//! What Keel's tests share, written once: where the shared data folder is, reading a file from
//! it, and (feature `encoder`) the real all-MiniLM-L6-v2 encoder loaded once per test binary.
//!
//! A dev-dependency only (`publish = false`): no library crate depends on it for its code.

use std::path::PathBuf;

/// The shared data folder: `$KEEL_SHARED` when set and not empty, else `shared/` beside the
/// repository (this crate is `<repo>/crates/keel-test-support`).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("KEEL_SHARED") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
    }
}

/// `rel` inside [`shared_dir`], which must exist (the panic says where it looked).
pub fn shared_file(rel: &str) -> PathBuf {
    let path = shared_dir().join(rel);
    assert!(path.is_file(), "{} is missing (set KEEL_SHARED to the shared folder)", path.display());
    path
}

/// The text of `rel` inside [`shared_dir`].
pub fn shared_text(rel: &str) -> String {
    let path = shared_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (set KEEL_SHARED)", path.display()))
}

/// A small seeded generator (xorshift64*) for tests that print their seed, so a failure can be
/// replayed from it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(feature = "encoder")]
pub use encoder::{MINILM, encoder, encoder_arc, minilm};

#[cfg(feature = "encoder")]
mod encoder {
    use std::sync::{Arc, OnceLock};

    use keel_embed::{Encoder, EncoderConfig, InstalledModel, PullOptions, pull};

    /// The encoder the tests run on.
    pub const MINILM: &str = "all-MiniLM-L6-v2";

    /// all-MiniLM-L6-v2, pulled once per test binary with `PullOptions::from_env()` (the cache
    /// in `KEEL_MODELS`, else the network).
    pub fn minilm() -> &'static InstalledModel {
        static MODEL: OnceLock<InstalledModel> = OnceLock::new();
        MODEL.get_or_init(|| pull(MINILM, &PullOptions::from_env()).expect("pull all-MiniLM-L6-v2 (set KEEL_MODELS)"))
    }

    /// One encoder on [`minilm`] with default settings, shared by a test binary's tests.
    pub fn encoder() -> &'static Encoder {
        shared()
    }

    /// [`encoder`] as the `Arc` a server state holds (the same encoder).
    pub fn encoder_arc() -> Arc<Encoder> {
        Arc::clone(shared())
    }

    fn shared() -> &'static Arc<Encoder> {
        static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
        ENCODER
            .get_or_init(|| Arc::new(Encoder::load(minilm(), EncoderConfig::default()).expect("load all-MiniLM-L6-v2")))
    }
}
