//! One type for every head, so callers predict and store them the same way.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::majority::Majority;
use crate::mlp::Mlp;
use crate::ngram::NgramModel;
use crate::sparse::SparseModel;
use crate::{LogisticRegression, TrainError, softmax_f64};

/// What a head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Embedding vectors of this length.
    Embedding { dim: usize },
    /// Raw text.
    Text,
    /// Raw text and its embedding (the combined n-gram + embedding model).
    TextAndEmbedding { dim: usize },
    /// Anything: the prediction ignores the input (majority class).
    Any,
}

/// One input row.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Embedding(&'a [f32]),
    Text(&'a str),
    /// A text and its embedding: every head can read this.
    Both {
        text: &'a str,
        embedding: &'a [f32],
    },
}

/// A head scaled by a temperature fitted on validation: `softmax(logits / temperature)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibrated {
    pub temperature: f32,
    pub base: Box<Head>,
}

/// Every trained head. Its serialised form ([`Head::to_bytes`], compact JSON tagged with
/// `kind`) is the model artifact; equal heads give equal bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "model", rename_all = "snake_case")]
pub enum Head {
    Majority(Majority),
    Logistic(LogisticRegression),
    Mlp(Mlp),
    Ngram(NgramModel),
    Sparse(SparseModel),
    Calibrated(Calibrated),
}

impl Head {
    /// `"majority"`, `"logistic"`, `"mlp"`, `"ngram"`, `"sparse"`, or the base's kind for a calibrated head.
    pub fn kind(&self) -> &'static str {
        match self {
            Head::Majority(_) => "majority",
            Head::Logistic(_) => "logistic",
            Head::Mlp(_) => "mlp",
            Head::Ngram(_) => "ngram",
            Head::Sparse(m) if m.embedding_dim().is_some() => "combined",
            Head::Sparse(_) => "sparse",
            Head::Calibrated(c) => c.base.kind(),
        }
    }

    pub fn labels(&self) -> &[String] {
        match self {
            Head::Majority(m) => m.labels(),
            Head::Logistic(m) => m.labels(),
            Head::Mlp(m) => m.labels(),
            Head::Ngram(m) => m.labels(),
            Head::Sparse(m) => m.labels(),
            Head::Calibrated(c) => c.base.labels(),
        }
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            Head::Majority(_) => InputKind::Any,
            Head::Logistic(m) => InputKind::Embedding { dim: m.dim() },
            Head::Mlp(m) => InputKind::Embedding { dim: m.dim() },
            Head::Sparse(m) => match m.embedding_dim() {
                Some(dim) => InputKind::TextAndEmbedding { dim },
                None => InputKind::Text,
            },
            Head::Ngram(_) => InputKind::Text,
            Head::Calibrated(c) => c.base.input_kind(),
        }
    }

    /// The temperature the logits are divided by (1 unless calibrated).
    pub fn temperature(&self) -> f32 {
        match self {
            Head::Calibrated(c) => c.temperature,
            _ => 1.0,
        }
    }

    /// The same head with its logits divided by `temperature` (replacing any earlier one).
    ///
    /// Panics unless `temperature` is finite and positive.
    pub fn with_temperature(self, temperature: f32) -> Head {
        assert!(temperature.is_finite() && temperature > 0.0, "temperature must be finite and positive");
        let base = match self {
            Head::Calibrated(c) => c.base,
            other => Box::new(other),
        };
        Head::Calibrated(Calibrated { temperature, base })
    }

    /// Class scores before the softmax (the temperature already applied).
    pub fn logits(&self, input: Input<'_>) -> Result<Vec<f32>, TrainError> {
        let wrong = |want: &str| Err(TrainError::WrongInput(format!("a {} head needs {want}", self.kind())));
        match (self, input) {
            (Head::Majority(m), _) => Ok(m.logits()),
            (Head::Logistic(m), Input::Embedding(x)) => {
                check_dim(x, m.dim())?;
                Ok(m.logits(x))
            }
            (Head::Mlp(m), Input::Embedding(x)) => {
                check_dim(x, m.dim())?;
                Ok(m.logits(x))
            }
            (Head::Logistic(m), Input::Both { embedding, .. }) => {
                check_dim(embedding, m.dim())?;
                Ok(m.logits(embedding))
            }
            (Head::Mlp(m), Input::Both { embedding, .. }) => {
                check_dim(embedding, m.dim())?;
                Ok(m.logits(embedding))
            }
            (Head::Ngram(m), Input::Text(t) | Input::Both { text: t, .. }) => Ok(m.logits(t)),
            (Head::Sparse(m), Input::Both { text, embedding }) => match m.embedding_dim() {
                Some(dim) => {
                    check_dim(embedding, dim)?;
                    Ok(m.logits_combined(text, embedding))
                }
                None => Ok(m.logits(text)),
            },
            (Head::Sparse(m), Input::Text(_)) if m.embedding_dim().is_some() => wrong("text and its embedding"),
            (Head::Sparse(m), Input::Text(t)) => Ok(m.logits(t)),
            (Head::Calibrated(c), input) => Ok(c.base.logits(input)?.into_iter().map(|z| z / c.temperature).collect()),
            (Head::Logistic(_) | Head::Mlp(_), Input::Text(_)) => wrong("an embedding, not text"),
            (Head::Ngram(_) | Head::Sparse(_), Input::Embedding(_)) => wrong("text, not an embedding"),
        }
    }

    /// Class probabilities for one input (they sum to 1).
    pub fn predict_proba(&self, input: Input<'_>) -> Result<Vec<f32>, TrainError> {
        let mut z: Vec<f64> = self.logits(input)?.iter().map(|&v| f64::from(v)).collect();
        softmax_f64(&mut z);
        Ok(z.iter().map(|&p| p as f32).collect())
    }

    pub fn predict_proba_embedding(&self, x: &[f32]) -> Result<Vec<f32>, TrainError> {
        self.predict_proba(Input::Embedding(x))
    }

    pub fn predict_proba_text(&self, text: &str) -> Result<Vec<f32>, TrainError> {
        self.predict_proba(Input::Text(text))
    }

    /// Logits for each row of `x`: `rows × n_classes`.
    pub fn logits_batch(&self, x: &Matrix) -> Result<Matrix, TrainError> {
        batch(x.rows(), self.labels().len(), |i| self.logits(Input::Embedding(x.row(i))))
    }

    /// Probabilities for each row of `x`: `rows × n_classes`.
    pub fn predict_proba_batch(&self, x: &Matrix) -> Result<Matrix, TrainError> {
        batch(x.rows(), self.labels().len(), |i| self.predict_proba(Input::Embedding(x.row(i))))
    }

    pub fn logits_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Matrix, TrainError> {
        batch(texts.len(), self.labels().len(), |i| self.logits(Input::Text(texts[i].as_ref())))
    }

    pub fn predict_proba_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Matrix, TrainError> {
        batch(texts.len(), self.labels().len(), |i| self.predict_proba(Input::Text(texts[i].as_ref())))
    }

    /// Logits for texts and their embeddings (row `i` of `x` is text `i`'s).
    pub fn logits_both<S: AsRef<str>>(&self, texts: &[S], x: &Matrix) -> Result<Matrix, TrainError> {
        both_rows(texts.len(), x)?;
        batch(texts.len(), self.labels().len(), |i| {
            self.logits(Input::Both { text: texts[i].as_ref(), embedding: x.row(i) })
        })
    }

    /// Probabilities for texts and their embeddings (row `i` of `x` is text `i`'s).
    pub fn predict_proba_both<S: AsRef<str>>(&self, texts: &[S], x: &Matrix) -> Result<Matrix, TrainError> {
        both_rows(texts.len(), x)?;
        batch(texts.len(), self.labels().len(), |i| {
            self.predict_proba(Input::Both { text: texts[i].as_ref(), embedding: x.row(i) })
        })
    }

    /// The artifact: compact JSON `{"kind": ..., "model": ...}`; large arrays are base64 of
    /// little-endian f32s. Equal heads give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("heads of strings and finite floats always serialise")
    }

    /// Reads an artifact written by [`Head::to_bytes`], checking shapes and values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Head, TrainError> {
        let head: Head = serde_json::from_slice(bytes).map_err(|e| TrainError::InvalidArtifact(e.to_string()))?;
        head.validate()?;
        Ok(head)
    }

    fn validate(&self) -> Result<(), TrainError> {
        match self {
            Head::Majority(m) => m.validate(),
            Head::Logistic(m) => m.validate(),
            // Checked while deserialising.
            Head::Mlp(_) | Head::Ngram(_) | Head::Sparse(_) => Ok(()),
            Head::Calibrated(c) => {
                if !(c.temperature.is_finite() && c.temperature > 0.0) {
                    return Err(TrainError::InvalidArtifact("temperature must be finite and positive".into()));
                }
                c.base.validate()
            }
        }
    }
}

fn check_dim(x: &[f32], dim: usize) -> Result<(), TrainError> {
    if x.len() == dim {
        Ok(())
    } else {
        Err(TrainError::WrongInput(format!("embedding has {} components, the head expects {dim}", x.len())))
    }
}

fn both_rows(texts: usize, x: &Matrix) -> Result<(), TrainError> {
    if x.rows() == texts {
        Ok(())
    } else {
        Err(TrainError::WrongInput(format!("{texts} texts but {} embeddings", x.rows())))
    }
}

fn batch(rows: usize, k: usize, f: impl Fn(usize) -> Result<Vec<f32>, TrainError>) -> Result<Matrix, TrainError> {
    let mut out = Matrix::zeros(rows, k);
    for i in 0..rows {
        out.row_mut(i).copy_from_slice(&f(i)?);
    }
    Ok(out)
}

impl From<LogisticRegression> for Head {
    fn from(m: LogisticRegression) -> Self {
        Head::Logistic(m)
    }
}
impl From<Mlp> for Head {
    fn from(m: Mlp) -> Self {
        Head::Mlp(m)
    }
}
impl From<NgramModel> for Head {
    fn from(m: NgramModel) -> Self {
        Head::Ngram(m)
    }
}
impl From<SparseModel> for Head {
    fn from(m: SparseModel) -> Self {
        Head::Sparse(m)
    }
}
impl From<Majority> for Head {
    fn from(m: Majority) -> Self {
        Head::Majority(m)
    }
}
