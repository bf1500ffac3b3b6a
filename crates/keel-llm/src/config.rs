//! The generator chain from the environment, shared by `keel ask` and `keel serve`.

use std::sync::Arc;

use crate::LlmError;
use crate::generator::{Chain, Generator, Prices};
use crate::local::LocalGguf;
use crate::openai::{OpenAiCompatible, OpenAiConfig};
use crate::reply::Capability;

/// Default cap on the local model's window: prefill time grows with the prompt, and 2,048
/// tokens holds several retrieved chunks with room for the answer.
pub const DEFAULT_LOCAL_WINDOW: usize = 2048;

/// `KEEL_LLM_GGUF`: a llama-family GGUF (ChatML template) the user brings for local answers.
fn user_gguf() -> Option<std::path::PathBuf> {
    std::env::var_os("KEEL_LLM_GGUF").filter(|v| !v.is_empty()).map(Into::into)
}

/// Loads the user's GGUF; its model id carries the file's sha256 (first 12 hex digits).
fn load_user_gguf(path: &std::path::Path) -> Result<LocalGguf, LlmError> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| LlmError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| LlmError::io(path, e))?;
    let sha = hex::encode(hasher.finalize());
    let name = path.file_stem().map_or_else(|| "gguf".into(), |s| s.to_string_lossy().into_owned());
    LocalGguf::load(path, &name, &sha[..12])
}

/// Whether the configured chain is trusted to write answers in `auto` mode, from the same
/// environment as [`chain_from_env`] and without loading anything. Capable: the first
/// generator is a remote model (`KEEL_LLM_BASE_URL`, chain `remote,...`), or the local model
/// is a GGUF the user brought (`KEEL_LLM_GGUF`), or `KEEL_LLM_CAPABLE=1` vouches for the chain.
/// Not capable: the bundled SmolLM2-135M alone, which invents answers too often to be shown
/// by default (every generated answer is checked either way).
pub fn capability_from_env() -> Capability {
    let remote = std::env::var("KEEL_LLM_BASE_URL").is_ok_and(|v| !v.trim().is_empty());
    let spec = std::env::var("KEEL_LLM_CHAIN").ok().filter(|s| !s.trim().is_empty());
    let first =
        spec.as_deref().map_or(if remote { "remote" } else { "local" }, |s| s.split(',').next().unwrap_or("").trim());
    if std::env::var("KEEL_LLM_CAPABLE").is_ok_and(|v| v.trim() == "1") {
        return Capability { capable: true, why: "KEEL_LLM_CAPABLE=1 vouches for the configured generator".into() };
    }
    match (first, user_gguf()) {
        ("remote", _) if remote => {
            Capability { capable: true, why: "the first generator is a remote model (KEEL_LLM_BASE_URL)".into() }
        }
        ("local", Some(path)) => Capability {
            capable: true,
            why: format!("the local model is the user's GGUF {} (KEEL_LLM_GGUF)", path.display()),
        },
        _ => Capability {
            capable: false,
            why: "the only generator is the bundled SmolLM2-135M, too small to trust with answers \
                  (configure a remote model with KEEL_LLM_BASE_URL, bring a larger GGUF with KEEL_LLM_GGUF, \
                  or ask with --mode generate)"
                .into(),
        },
    }
}

/// Which generators, in order. `KEEL_LLM_CHAIN` is a comma-separated list of `remote` and
/// `local`; without it: `remote,local` when `KEEL_LLM_BASE_URL` is set, else `local`. The
/// local model is the bundled SmolLM2, or the GGUF at `KEEL_LLM_GGUF` (sha256 in its id).
/// The local model's prices come from `KEEL_LLM_LOCAL_PRICE_IN_PER_1K` / `..._OUT_PER_1K`
/// (default 0), its window cap from `window`.
pub fn chain_from_env(pull: &keel_embed::PullOptions, window: usize) -> Result<Chain, LlmError> {
    let remote = OpenAiConfig::from_env()?;
    let spec = std::env::var("KEEL_LLM_CHAIN")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| if remote.is_some() { "remote,local".into() } else { "local".into() });
    let mut generators: Vec<Box<dyn Generator>> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        match part {
            "local" => {
                let price = |k: &str| -> Result<f64, LlmError> {
                    match std::env::var(k) {
                        Ok(v) if !v.trim().is_empty() => {
                            v.trim().parse().map_err(|_| LlmError::Config(format!("{k}={v} is not a number")))
                        }
                        _ => Ok(0.0),
                    }
                };
                let prices = Prices {
                    input_per_1k: price("KEEL_LLM_LOCAL_PRICE_IN_PER_1K")?,
                    output_per_1k: price("KEEL_LLM_LOCAL_PRICE_OUT_PER_1K")?,
                };
                let local = match user_gguf() {
                    Some(path) => load_user_gguf(&path)?,
                    None => LocalGguf::smollm2(pull)?,
                };
                let local = local.with_window(window).with_prices(prices);
                generators.push(Box::new(Arc::new(local)));
            }
            "remote" => {
                let config = remote.clone().ok_or_else(|| {
                    LlmError::Config("KEEL_LLM_CHAIN names `remote` but KEEL_LLM_BASE_URL is not set".into())
                })?;
                generators.push(Box::new(OpenAiCompatible::new(config)?));
            }
            other => {
                return Err(LlmError::Config(format!("KEEL_LLM_CHAIN: unknown generator {other:?} (local, remote)")));
            }
        }
    }
    Chain::new(generators)
}
