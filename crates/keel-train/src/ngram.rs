//! The text baseline and fallback head: hashed word and character n-grams into a linear
//! softmax model trained by SGD. It reads raw text, so it works when the encoder does not.
//!
//! Features (scikit-learn's `HashingVectorizer` in spirit): the text is lower-cased and split
//! into words at non-alphanumeric characters; word n-grams of `word_ngrams` lengths and
//! character n-grams of `char_ngrams` lengths taken inside each word padded with spaces
//! (`analyzer="char_wb"`) are hashed (FNV-1a) into `2^buckets_log2` buckets with a sign bit,
//! summed, and the vector is L2-normalised.
//!
//! Training minimises the mean cross-entropy plus `(l2/2)‖W‖²` by plain SGD with the step
//! `η_t = η₀ / (1 + η₀·l2·t)` (Bottou's schedule), rows visited in a seeded shuffled order
//! each epoch. The weight decay is applied through a running scale factor so each step costs
//! only the row's non-zero features. Deterministic: same texts, labels and config give the
//! same bytes.

use serde::{Deserialize, Serialize};

use crate::codec::{b64_to_f32s, b64_to_u32s, f32s_to_b64, u32s_to_b64};
use crate::rng::{self, fnv1a};
use crate::{TrainError, softmax_f64};

/// Settings of the n-gram model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NgramConfig {
    /// Number of hash buckets as a power of two (default 18: 262,144 buckets).
    pub buckets_log2: u32,
    /// Inclusive range of word n-gram lengths (default 1..=2).
    pub word_ngrams: (usize, usize),
    /// Inclusive range of character n-gram lengths inside words (default 3..=5; (0, 0) for none).
    pub char_ngrams: (usize, usize),
    /// L2 penalty per example (default 1e-6).
    pub l2: f64,
    /// Passes over the data (default 10).
    pub epochs: usize,
    /// Initial step size η₀ (default 0.5).
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for NgramConfig {
    fn default() -> Self {
        Self {
            buckets_log2: 18,
            word_ngrams: (1, 2),
            char_ngrams: (3, 5),
            l2: 1e-6,
            epochs: 10,
            learning_rate: 0.5,
            seed: 0,
        }
    }
}

/// What the features depend on; stored in the artifact so prediction hashes the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Hashing {
    buckets_log2: u32,
    word_ngrams: (usize, usize),
    char_ngrams: (usize, usize),
}

/// A sparse L2-normalised feature vector: (bucket, value), buckets ascending and distinct.
type Features = Vec<(u32, f32)>;

impl Hashing {
    fn features(&self, text: &str) -> Features {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let mask = (1u64 << self.buckets_log2) - 1;
        let mut raw: Vec<(u32, f32)> = Vec::new();
        let mut push = |h: u64| {
            let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
            raw.push(((h & mask) as u32, sign));
        };
        // The bytes hashed are the n-gram's UTF-8 text (words joined by a space; characters of
        // the space-padded word), sliced from reused buffers rather than built one by one.
        let mut buf = String::new();
        let (wlo, whi) = self.word_ngrams;
        if wlo >= 1 {
            for n in wlo..=whi {
                for win in words.windows(n) {
                    buf.clear();
                    for (j, w) in win.iter().enumerate() {
                        if j > 0 {
                            buf.push(' ');
                        }
                        buf.push_str(w);
                    }
                    push(fnv1a(b'w' as u64, buf.as_bytes()));
                }
            }
        }
        let (clo, chi) = self.char_ngrams;
        if clo >= 1 {
            let mut starts: Vec<usize> = Vec::new();
            for w in &words {
                buf.clear();
                buf.push(' ');
                buf.push_str(w);
                buf.push(' ');
                starts.clear();
                starts.extend(buf.char_indices().map(|(i, _)| i));
                starts.push(buf.len());
                let chars = starts.len() - 1;
                for n in clo..=chi {
                    for s in 0..(chars + 1).saturating_sub(n) {
                        push(fnv1a(b'c' as u64, &buf.as_bytes()[starts[s]..starts[s + n]]));
                    }
                }
            }
        }
        raw.sort_by_key(|&(b, _)| b);
        let mut out: Features = Vec::with_capacity(raw.len());
        for (b, v) in raw {
            match out.last_mut() {
                Some((lb, lv)) if *lb == b => *lv += v,
                _ => out.push((b, v)),
            }
        }
        out.retain(|&(_, v)| v != 0.0);
        let norm = out.iter().map(|&(_, v)| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut out {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
        out
    }
}

/// How n-gram training went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NgramReport {
    pub epochs: usize,
    /// Mean training cross-entropy after each epoch.
    pub train_log_loss: Vec<f64>,
    /// Buckets with at least one non-zero weight.
    pub used_buckets: usize,
}

/// Hashed word and character n-gram softmax classifier over raw text.
#[derive(Clone, Debug, PartialEq)]
pub struct NgramModel {
    labels: Vec<String>,
    hashing: Hashing,
    /// `buckets × k`, bucket-major: bucket `b`'s class weights are `weights[b·k..(b+1)·k]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl NgramModel {
    /// Trains on raw texts with label indices into `labels`.
    pub fn fit<S: AsRef<str>>(
        texts: &[S],
        y: &[usize],
        labels: Vec<String>,
        cfg: &NgramConfig,
    ) -> Result<(Self, NgramReport), TrainError> {
        crate::check_labels(&labels)?;
        if texts.len() != y.len() {
            return Err(TrainError::LengthMismatch { rows: texts.len(), labels: y.len() });
        }
        if texts.is_empty() {
            return Err(TrainError::Empty);
        }
        if !(8..=24).contains(&cfg.buckets_log2) {
            return Err(TrainError::InvalidConfig(format!("buckets_log2 must be in 8..=24, got {}", cfg.buckets_log2)));
        }
        if cfg.word_ngrams.0 > cfg.word_ngrams.1 || cfg.char_ngrams.0 > cfg.char_ngrams.1 {
            return Err(TrainError::InvalidConfig("n-gram ranges must be (low, high) with low <= high".into()));
        }
        if !(cfg.l2.is_finite() && cfg.l2 >= 0.0 && cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
            return Err(TrainError::InvalidConfig("l2 must be >= 0 and learning_rate > 0".into()));
        }
        let k = labels.len();
        if let Some((row, &label)) = y.iter().enumerate().find(|(_, l)| **l >= k) {
            return Err(TrainError::LabelOutOfRange { row, label, n_classes: k });
        }
        let hashing =
            Hashing { buckets_log2: cfg.buckets_log2, word_ngrams: cfg.word_ngrams, char_ngrams: cfg.char_ngrams };
        let feats: Vec<Features> = texts.iter().map(|t| hashing.features(t.as_ref())).collect();
        let buckets = 1usize << cfg.buckets_log2;
        let mut v = vec![0.0f32; buckets * k];
        let mut bias = vec![0.0f64; k];
        let mut scale = 1.0f64;
        let mut rng = rng::seeded(cfg.seed);
        let mut order: Vec<usize> = (0..texts.len()).collect();
        let mut t = 0u64;
        let mut z = vec![0.0f64; k];
        let mut losses = Vec::with_capacity(cfg.epochs);
        for _ in 0..cfg.epochs {
            rng.shuffle(&mut order);
            let mut loss = 0.0;
            for &i in &order {
                let eta = cfg.learning_rate / (1.0 + cfg.learning_rate * cfg.l2 * t as f64);
                t += 1;
                let f = &feats[i];
                z.copy_from_slice(&bias);
                for &(b, x) in f {
                    let row = &v[b as usize * k..(b as usize + 1) * k];
                    for c in 0..k {
                        z[c] += scale * f64::from(x) * f64::from(row[c]);
                    }
                }
                softmax_f64(&mut z);
                loss -= z[y[i]].max(1e-300).ln();
                z[y[i]] -= 1.0;
                // Decay all weights by (1 − η·l2) through the scale, then step on this row.
                scale *= 1.0 - eta * cfg.l2;
                for &(b, x) in f {
                    let row = &mut v[b as usize * k..(b as usize + 1) * k];
                    for c in 0..k {
                        row[c] -= (eta * z[c] * f64::from(x) / scale) as f32;
                    }
                }
                for c in 0..k {
                    bias[c] -= eta * z[c];
                }
                if scale < 1e-6 {
                    v.iter_mut().for_each(|w| *w = (f64::from(*w) * scale) as f32);
                    scale = 1.0;
                }
            }
            losses.push(loss / texts.len() as f64);
        }
        let weights: Vec<f32> = v.iter().map(|&w| (f64::from(w) * scale) as f32).collect();
        let used = weights.chunks_exact(k).filter(|r| r.iter().any(|w| *w != 0.0)).count();
        let model = Self { labels, hashing, weights, bias: bias.iter().map(|&b| b as f32).collect() };
        Ok((model, NgramReport { epochs: cfg.epochs, train_log_loss: losses, used_buckets: used }))
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Unnormalised class scores for one text.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        let k = self.labels.len();
        let mut z: Vec<f64> = self.bias.iter().map(|&b| f64::from(b)).collect();
        for (b, x) in self.hashing.features(text) {
            let row = &self.weights[b as usize * k..(b as usize + 1) * k];
            for c in 0..k {
                z[c] += f64::from(x) * f64::from(row[c]);
            }
        }
        z.iter().map(|&v| v as f32).collect()
    }

    /// Class probabilities for one text (they sum to 1).
    pub fn predict_proba(&self, text: &str) -> Vec<f32> {
        let mut z: Vec<f64> = self.logits(text).iter().map(|&v| f64::from(v)).collect();
        softmax_f64(&mut z);
        z.iter().map(|&p| p as f32).collect()
    }

    pub(crate) fn to_artifact(&self) -> NgramArtifact {
        let k = self.labels.len();
        let mut rows = Vec::new();
        let mut values = Vec::new();
        for (b, r) in self.weights.chunks_exact(k).enumerate() {
            if r.iter().any(|w| *w != 0.0) {
                rows.push(b as u32);
                values.extend_from_slice(r);
            }
        }
        NgramArtifact {
            labels: self.labels.clone(),
            buckets_log2: self.hashing.buckets_log2,
            word_ngrams: self.hashing.word_ngrams,
            char_ngrams: self.hashing.char_ngrams,
            bias: self.bias.clone(),
            rows: u32s_to_b64(&rows),
            values: f32s_to_b64(&values),
        }
    }

    pub(crate) fn from_artifact(a: NgramArtifact) -> Result<Self, TrainError> {
        let bad = |m: &str| TrainError::InvalidArtifact(format!("n-gram model: {m}"));
        crate::check_labels(&a.labels).map_err(|e| TrainError::InvalidArtifact(e.to_string()))?;
        if !(8..=24).contains(&a.buckets_log2) {
            return Err(bad("bucket count out of range"));
        }
        let k = a.labels.len();
        if a.bias.len() != k {
            return Err(bad("bias length"));
        }
        let rows = b64_to_u32s(&a.rows)?;
        let values = b64_to_f32s(&a.values)?;
        if values.len() != rows.len() * k {
            return Err(bad("weights do not match their rows"));
        }
        let buckets = 1usize << a.buckets_log2;
        let mut weights = vec![0.0f32; buckets * k];
        for (r, vals) in rows.iter().zip(values.chunks_exact(k)) {
            let r = *r as usize;
            if r >= buckets {
                return Err(bad("row out of range"));
            }
            weights[r * k..(r + 1) * k].copy_from_slice(vals);
        }
        if !weights.iter().chain(&a.bias).all(|v| v.is_finite()) {
            return Err(bad("non-finite parameter"));
        }
        let hashing = Hashing { buckets_log2: a.buckets_log2, word_ngrams: a.word_ngrams, char_ngrams: a.char_ngrams };
        Ok(Self { labels: a.labels, hashing, weights, bias: a.bias })
    }
}

/// The serialised form: only buckets with a non-zero weight, as base64 little-endian arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NgramArtifact {
    labels: Vec<String>,
    buckets_log2: u32,
    word_ngrams: (usize, usize),
    char_ngrams: (usize, usize),
    bias: Vec<f32>,
    /// Bucket indices (u32 LE, ascending).
    rows: String,
    /// `k` f32 LE weights per listed bucket.
    values: String,
}

impl Serialize for NgramModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_artifact().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NgramModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let a = NgramArtifact::deserialize(d)?;
        Self::from_artifact(a).map_err(serde::de::Error::custom)
    }
}
