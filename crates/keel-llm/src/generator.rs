//! The small trait between the answer pipeline and its backends, and the fallback chain.

use serde::{Deserialize, Serialize};

use crate::LlmError;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: "system".into(), content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

/// Decoding parameters; all of them enter the response cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// New tokens at most.
    pub max_tokens: usize,
    /// 0 is greedy decoding; above 0 samples with this temperature from the seeded generator.
    pub temperature: f64,
    /// Nucleus sampling when sampling (ignored when greedy).
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Local generation: penalty on tokens seen in the last `repeat_last_n` positions (1 = off).
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self { max_tokens: 128, temperature: 0.0, top_p: None, seed: 42, repeat_penalty: 1.1, repeat_last_n: 64 }
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    pub messages: Vec<Message>,
    pub params: Params,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End of turn (EOS / `<|im_end|>`), or the endpoint's `stop`.
    Stop,
    /// `max_tokens` reached (or the context window filled).
    Length,
}

/// What a generator produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    /// Name of the generator that answered.
    pub generator: String,
    /// Its model id (as in the cache key).
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// From the generator's prices per 1k tokens.
    pub cost: f64,
    pub finish: Finish,
    /// HTTP attempts (with retries) or local runs, summed over every generator tried.
    pub attempts: u64,
    /// Generators that failed before this one answered, with their errors.
    pub failed: Vec<(String, String)>,
}

/// Prices per 1,000 tokens (any currency; the store records the product).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
}

impl Prices {
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_1k + tokens_out as f64 * self.output_per_1k) / 1000.0
    }
}

/// A text generator: a local model or a remote endpoint. Implementations are blocking; callers
/// run them off the async runtime.
pub trait Generator: Send + Sync {
    /// Short name for logs and records: `local:smollm2-135m-instruct`, `openai:http://...`.
    fn name(&self) -> String;
    /// Model identity inside the response-cache key (includes the weights' hash or endpoint).
    fn model_id(&self) -> String;
    /// Context window in tokens (prompt + answer).
    fn context_window(&self) -> usize;
    /// Tokens the rendered chat prompt takes (exact with the model's tokenizer when there is one).
    fn prompt_tokens(&self, messages: &[Message]) -> Result<usize, LlmError>;
    /// Tokens of a bare text (for trimming one source to fit).
    fn text_tokens(&self, text: &str) -> Result<usize, LlmError>;
    /// Generates, calling `on_text` with each new piece of text as it is produced.
    fn generate(&self, req: &GenRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError>;
}

/// Generators tried in order: the first that answers wins; each failure is kept.
pub struct Chain {
    generators: Vec<Box<dyn Generator>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("generators", &self.generators.iter().map(|g| g.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Chain {
    pub fn new(generators: Vec<Box<dyn Generator>>) -> Result<Self, LlmError> {
        if generators.is_empty() {
            return Err(LlmError::NoGenerator);
        }
        Ok(Self { generators })
    }

    pub fn generators(&self) -> &[Box<dyn Generator>] {
        &self.generators
    }

    /// The chain's identity in the cache key: its members' model ids in order.
    pub fn model_id(&self) -> String {
        self.generators.iter().map(|g| g.model_id()).collect::<Vec<_>>().join(" > ")
    }

    pub fn name(&self) -> String {
        self.generators.iter().map(|g| g.name()).collect::<Vec<_>>().join(" > ")
    }

    /// The model id of the generator tried first.
    pub fn first_model_id(&self) -> String {
        self.generators.first().map(|g| g.model_id()).unwrap_or_default()
    }

    /// The smallest window of any member, so a prompt fits whichever one answers.
    pub fn context_window(&self) -> usize {
        self.generators.iter().map(|g| g.context_window()).min().unwrap_or(0)
    }

    /// The largest count of any member (exact for local models, an upper estimate for remote ones).
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<usize, LlmError> {
        let mut most = 0;
        for g in &self.generators {
            most = most.max(g.prompt_tokens(messages)?);
        }
        Ok(most)
    }

    pub fn text_tokens(&self, text: &str) -> Result<usize, LlmError> {
        let mut most = 0;
        for g in &self.generators {
            most = most.max(g.text_tokens(text)?);
        }
        Ok(most)
    }

    /// Tries each generator in order. Text already streamed by a generator that then failed is
    /// not taken back (the CLI prints a note); the returned text is the answering generator's.
    pub fn generate(&self, req: &GenRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError> {
        let mut failed = Vec::new();
        let mut attempts = 0;
        for g in &self.generators {
            match g.generate(req, on_text) {
                Ok(mut generation) => {
                    generation.attempts += attempts;
                    failed.append(&mut generation.failed);
                    generation.failed = failed;
                    return Ok(generation);
                }
                Err(e) => {
                    tracing::warn!(generator = %g.name(), error = %e, "generator failed; trying the next");
                    attempts += attempts_of(&e);
                    failed.push((g.name(), e.to_string()));
                }
            }
        }
        Err(LlmError::AllFailed { failed, attempts })
    }
}

/// HTTP attempts an error stands for (retries are counted by the remote generator).
fn attempts_of(e: &LlmError) -> u64 {
    match e {
        LlmError::GaveUp { attempts, .. } => *attempts,
        _ => 1,
    }
}

/// A shared generator is a generator (tests and servers keep a handle to the same model).
impl<G: Generator + ?Sized> Generator for std::sync::Arc<G> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn model_id(&self) -> String {
        (**self).model_id()
    }
    fn context_window(&self) -> usize {
        (**self).context_window()
    }
    fn prompt_tokens(&self, messages: &[Message]) -> Result<usize, LlmError> {
        (**self).prompt_tokens(messages)
    }
    fn text_tokens(&self, text: &str) -> Result<usize, LlmError> {
        (**self).text_tokens(text)
    }
    fn generate(&self, req: &GenRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError> {
        (**self).generate(req, on_text)
    }
}
