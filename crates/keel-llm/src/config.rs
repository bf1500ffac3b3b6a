//! The generator chain from the environment, shared by `keel ask` and `keel serve`.

use std::sync::Arc;

use crate::LlmError;
use crate::generator::{Chain, Generator, Prices};
use crate::local::LocalGguf;
use crate::openai::{OpenAiCompatible, OpenAiConfig};

/// Default cap on the local model's window: prefill time grows with the prompt, and 2,048
/// tokens holds several retrieved chunks with room for the answer.
pub const DEFAULT_LOCAL_WINDOW: usize = 2048;

/// Which generators, in order. `KEEL_LLM_CHAIN` is a comma-separated list of `remote` and
/// `local`; without it: `remote,local` when `KEEL_LLM_BASE_URL` is set, else `local`.
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
                let local = LocalGguf::smollm2(pull)?.with_window(window).with_prices(prices);
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
