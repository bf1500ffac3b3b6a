//! Any OpenAI-compatible chat-completions endpoint (`POST {base_url}/chat/completions`), with
//! timeouts and retries: exponential backoff with full jitter on 429, 5xx and transport errors
//! (timeouts, refused or reset connections), honouring `Retry-After` up to the backoff cap.

use std::time::{Duration, SystemTime};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::LlmError;
use crate::generator::{Finish, GenRequest, Generation, Generator, Message, Prices};

/// Retry policy: attempt `n` (0-based) that failed waits a uniformly random time in
/// `[0, min(cap, base * 2^n)]` ("full jitter") before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts in total, first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { max_attempts: 4, base: Duration::from_millis(250), cap: Duration::from_secs(8) }
    }
}

impl Retry {
    /// The wait after failed attempt `n`, given a server's `Retry-After` hint.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(2u32.saturating_pow(n)).min(self.cap);
        let jitter =
            Duration::try_from_secs_f64(rand::rng().random_range(0.0..=1.0) * ceiling.as_secs_f64()).unwrap_or(ceiling);
        match retry_after {
            Some(hint) => hint.min(self.cap).max(jitter),
            None => jitter,
        }
    }
}

/// A server's `Retry-After` value as a wait: delay-seconds (a non-negative number; fractions
/// accepted) or an HTTP date (the time until then, zero if past). Anything else (negative,
/// `NaN`, `inf`, garbage) is no hint; a huge number is a very long wait, which
/// [`Retry::delay`] caps.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // `try_from_secs_f64` refuses negative, NaN and infinite values; beyond ~585 years it
        // overflows, which is "wait as long as allowed".
        return match Duration::try_from_secs_f64(secs) {
            Ok(d) => Some(d),
            Err(_) if secs.is_finite() && secs > 0.0 => Some(Duration::MAX),
            Err(_) => None,
        };
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Where and how to reach the endpoint. Its `Debug` output shows no API key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    pub model: String,
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    pub retry: Retry,
    pub prices: Prices,
    /// The model's context window; prompts are fitted to it.
    pub context_window: usize,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("prices", &self.prices)
            .field("context_window", &self.context_window)
            .finish()
    }
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            retry: Retry::default(),
            prices: Prices::default(),
            context_window: 8192,
        }
    }

    /// From `KEEL_LLM_BASE_URL` (required), `KEEL_LLM_API_KEY`, `KEEL_LLM_MODEL` (default
    /// `gpt-4o-mini`), `KEEL_LLM_TIMEOUT_SECS`, `KEEL_LLM_MAX_ATTEMPTS`, `KEEL_LLM_CONTEXT`,
    /// `KEEL_LLM_PRICE_IN_PER_1K` and `KEEL_LLM_PRICE_OUT_PER_1K`. `None` when no base URL is set.
    pub fn from_env() -> Result<Option<Self>, LlmError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any source of variables (`lookup` answers a variable's value).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, LlmError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let Some(base) = var("KEEL_LLM_BASE_URL") else {
            return Ok(None);
        };
        let mut c = Self::new(base, var("KEEL_LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()));
        c.api_key = var("KEEL_LLM_API_KEY");
        fn num<T: std::str::FromStr>(k: &str, v: Option<String>, what: &str) -> Result<Option<T>, LlmError> {
            v.map(|s| s.trim().parse().map_err(|_| LlmError::Config(format!("{k}={s:?} is not {what}")))).transpose()
        }
        let positive = "a positive number of seconds (e.g. 60)";
        if let Some(s) = num::<f64>("KEEL_LLM_TIMEOUT_SECS", var("KEEL_LLM_TIMEOUT_SECS"), positive)? {
            c.timeout = Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
                .ok_or_else(|| LlmError::Config(format!("KEEL_LLM_TIMEOUT_SECS={s} must be above 0 and at most {} (seconds); unset it for the default 60", MAX_TIMEOUT.as_secs())))?;
        }
        let count = "a whole number (e.g. 4)";
        if let Some(n) = num("KEEL_LLM_MAX_ATTEMPTS", var("KEEL_LLM_MAX_ATTEMPTS"), count)? {
            c.retry.max_attempts = n;
        }
        if let Some(n) = num("KEEL_LLM_CONTEXT", var("KEEL_LLM_CONTEXT"), "a whole number of tokens (e.g. 8192)")? {
            c.context_window = n;
        }
        let price = |k: &str| -> Result<Option<f64>, LlmError> {
            let p = num::<f64>(k, var(k), "a price (e.g. 0.15)")?;
            match p {
                Some(p) if !(p.is_finite() && p >= 0.0) => {
                    Err(LlmError::Config(format!("{k}={p} must be a finite price of 0 or more per 1,000 tokens")))
                }
                p => Ok(p),
            }
        };
        if let Some(p) = price("KEEL_LLM_PRICE_IN_PER_1K")? {
            c.prices.input_per_1k = p;
        }
        if let Some(p) = price("KEEL_LLM_PRICE_OUT_PER_1K")? {
            c.prices.output_per_1k = p;
        }
        Ok(Some(c))
    }
}

/// The longest whole-request timeout `KEEL_LLM_TIMEOUT_SECS` may ask for (one day).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A remote chat model.
pub struct OpenAiCompatible {
    config: OpenAiConfig,
    endpoint: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible").field("endpoint", &self.endpoint).field("model", &self.config.model).finish()
    }
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

enum Failure {
    Retryable { error: LlmError, retry_after: Option<Duration> },
    Final(LlmError),
}

impl OpenAiCompatible {
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!("base URL {base:?} must start with http:// or https://")));
        }
        let endpoint = format!("{base}/chat/completions");
        let agent = ureq::AgentBuilder::new().timeout_connect(config.connect_timeout).timeout(config.timeout).build();
        Ok(Self { config, endpoint, agent })
    }

    fn attempt(&self, body: &serde_json::Value) -> Result<Generation, Failure> {
        let mut request = self.agent.post(&self.endpoint).set("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let endpoint = self.endpoint.clone();
        let response = match request.send_string(&body.to_string()) {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let retry_after = r.header("Retry-After").and_then(|v| parse_retry_after(v, SystemTime::now()));
                let text: String = r.into_string().unwrap_or_default().chars().take(300).collect();
                let error = LlmError::Http { endpoint, status, body: text };
                return Err(if status == 429 || status >= 500 {
                    Failure::Retryable { error, retry_after }
                } else {
                    Failure::Final(error)
                });
            }
            Err(ureq::Error::Transport(t)) => {
                let error = LlmError::Transport { endpoint, message: t.to_string() };
                return Err(Failure::Retryable { error, retry_after: None });
            }
        };
        // A body cut off mid-way (timeout, reset) is transient too.
        let text = response.into_string().map_err(|e| Failure::Retryable {
            error: LlmError::Transport { endpoint: endpoint.clone(), message: format!("reading the body: {e}") },
            retry_after: None,
        })?;
        let bad = |message: String| Failure::Final(LlmError::BadResponse { endpoint: endpoint.clone(), message });
        let parsed: Response = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let choice = parsed.choices.into_iter().next().ok_or_else(|| bad("no choices".into()))?;
        let content = choice.message.content.unwrap_or_default();
        let (tokens_in, tokens_out) = match parsed.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (estimate_tokens(&body.to_string()) as u64, estimate_tokens(&content) as u64),
        };
        Ok(Generation {
            text: content.trim().to_owned(),
            generator: self.name(),
            model: self.model_id(),
            tokens_in,
            tokens_out,
            cost: self.config.prices.cost(tokens_in, tokens_out),
            finish: if choice.finish_reason.as_deref() == Some("length") { Finish::Length } else { Finish::Stop },
            attempts: 1,
            failed: Vec::new(),
        })
    }
}

/// Upper estimate of tokens for a text when the endpoint's tokenizer is unknown: BPE
/// vocabularies average about four bytes a token on English; one per three bytes leaves margin.
/// Markers of the common chat templates besides `<|...|>` (ChatML, Llama 3, Phi, GPT): Llama
/// 2 and Mistral's, Gemma's, and sentence-piece's BOS/EOS/padding, matched in any case.
const MARKERS: [&str; 10] =
    ["[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"];

/// `text` with every chat-template marker broken by a space after its first character: `<|`
/// becomes `< |`, `|>` becomes `| >`, `[INST]` becomes `[ INST]`. Only spaces are inserted,
/// and a space is part of no marker, so no marker can be formed out of the pieces of others
/// (`<|im_<|endoftext|>start|>` becomes `< |im_< |endoftext| >start| >`).
pub fn break_markers(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let (bytes, low) = (text.as_bytes(), lower.as_bytes());
    let mut out = String::with_capacity(text.len() + 8);
    let mut start = 0;
    for i in 0..bytes.len() {
        let pipe = (bytes[i] == b'<' && bytes.get(i + 1) == Some(&b'|'))
            || (bytes[i] == b'|' && bytes.get(i + 1) == Some(&b'>'));
        if pipe || MARKERS.iter().any(|m| low[i..].starts_with(m.as_bytes())) {
            // Markers are ASCII: `i + 1` is a character boundary.
            out.push_str(&text[start..=i]);
            out.push(' ');
            start = i + 1;
        }
    }
    out.push_str(&text[start..]);
    out
}

pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

impl Generator for OpenAiCompatible {
    fn name(&self) -> String {
        format!("openai:{}", self.config.base_url.trim_end_matches('/'))
    }

    fn model_id(&self) -> String {
        format!("{}@{}", self.config.model, self.config.base_url.trim_end_matches('/'))
    }

    fn context_window(&self) -> usize {
        self.config.context_window
    }

    fn prompt_tokens(&self, messages: &[Message]) -> Result<usize, LlmError> {
        // Per message: the content plus a few tokens of role and separators.
        Ok(messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum::<usize>() + 3)
    }

    fn text_tokens(&self, text: &str) -> Result<usize, LlmError> {
        Ok(estimate_tokens(text))
    }

    fn generate(&self, req: &GenRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError> {
        let p = &req.params;
        // The remote model's vocabulary is unknown here, and servers that template the messages
        // into one string and tokenise it with special tokens parsed (llama.cpp's and others')
        // would read a chat control token written in a document or question as one: every
        // message is sent with such markers broken apart.
        let messages: Vec<Message> =
            req.messages.iter().map(|m| Message { role: m.role.clone(), content: break_markers(&m.content) }).collect();
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "seed": p.seed,
            "stream": false,
        });
        if let Some(top_p) = p.top_p {
            body["top_p"] = json!(top_p);
        }
        let attempts = self.config.retry.max_attempts.max(1);
        let mut last = String::new();
        for n in 0..attempts {
            match self.attempt(&body) {
                Ok(mut g) => {
                    g.attempts = u64::from(n) + 1;
                    on_text(&g.text);
                    return Ok(g);
                }
                Err(Failure::Final(e)) if n == 0 => return Err(e),
                Err(Failure::Final(e)) => {
                    return Err(LlmError::GaveUp {
                        endpoint: self.endpoint.clone(),
                        attempts: u64::from(n) + 1,
                        last: e.to_string(),
                    });
                }
                Err(Failure::Retryable { error, retry_after }) => {
                    last = error.to_string();
                    if n + 1 < attempts {
                        let wait = self.config.retry.delay(n, retry_after);
                        tracing::info!(endpoint = %self.endpoint, attempt = n + 1, error = %last,
                            wait_ms = wait.as_millis() as u64, "retrying");
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        Err(LlmError::GaveUp { endpoint: self.endpoint.clone(), attempts: u64::from(attempts), last })
    }
}
