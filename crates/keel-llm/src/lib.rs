//! Keel generation: grounded answers from a local model or a remote endpoint.
//!
//! - [`generator`]: the [`Generator`] trait (name, model id, context window, token counts,
//!   blocking `generate` with a streaming callback) and [`Chain`], generators tried in order.
//! - [`local`]: [`LocalGguf`], a GGUF llama model (SmolLM2-135M-Instruct Q4_1) on candle's
//!   quantized llama; the tokenizer is rebuilt from the GGUF metadata ([`gguf_tokenizer`]).
//! - [`openai`]: [`OpenAiCompatible`], any chat-completions endpoint, with timeouts and
//!   retries (exponential backoff, full jitter) on 429, 5xx and transport errors.
//! - [`prompt`]: numbered sources fitted to the context window by exact token counts.
//! - [`cite`]: which sources an answer draws on (word overlap; the rule is in its docs).
//! - [`extract`]: extractive answers, the sentences of the chunks that best answer the question.
//! - [`ground`]: is each sentence of a generated answer supported by the chunks it cites?
//! - [`reply`]: the answer shown: extracted, or generated and checked (withheld when not
//!   grounded, with the extractive answer and a notice in its place); [`reply()`].
//! - [`service`]: the response cache (key = hash of model, prompt and parameters) and the
//!   record of every call (tokens, cost, latency, hit, error) in the store; [`answer`].
//!
//! This crate knows nothing about HTTP servers, SQL or the CLI: the store is reached through
//! its methods, retrieval results arrive as [`Passage`]s.

mod error;

pub mod cite;
pub mod config;
pub mod extract;
pub mod generator;
pub mod gguf_tokenizer;
pub mod ground;
pub mod local;
pub mod openai;
pub mod prompt;
pub mod reply;
pub mod service;

pub use cite::Citation;
pub use config::{DEFAULT_LOCAL_WINDOW, capability_from_env, chain_from_env};
pub use error::LlmError;
pub use extract::{Embedder, ExtractOptions, Extraction, extract};
pub use generator::{Chain, Finish, GenRequest, Generation, Generator, Message, Params, Prices};
pub use ground::{Grounding, SentenceCheck, check};
pub use local::{LocalGguf, LocalTiming, SMOLLM2, SMOLLM2_FILE};
pub use openai::{OpenAiCompatible, OpenAiConfig, Retry, break_markers};
pub use prompt::{FittedPrompt, Passage};
pub use reply::{AnswerMode, Ask, Capability, Decision, Reply, plan, reply};
pub use service::{Answer, Completion, OnText, PromptSource, answer, cache_key, complete};
