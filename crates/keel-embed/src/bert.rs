//! Keel's own BERT forward pass on the CPU (fp32 or int8 weights), with mean pooling and L2
//! normalisation, as sentence-transformers computes them.
//!
//! Sequences are packed, not padded: a batch is the concatenation of its sequences' tokens, every
//! linear layer runs once over all of them, and attention runs per (sequence, head) over that
//! sequence's own tokens, so no work is spent on padding and no mask is needed.
//! All intermediate buffers live in a [`Scratch`] that is reused across layers and batches.

use std::collections::HashMap;

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::EmbedError;
use crate::kernels::{self, Epilogue, F32Matrix, Isa, QAct, QMatrix};

/// Numeric precision of the linear layers' weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and arithmetic: matches sentence-transformers to cosine ≥ 0.9999.
    #[default]
    F32,
    /// Weights quantized to int8 per output channel at load; activations quantized per row at
    /// run time, asymmetrically to 8 bits (a zero point per row); i32 accumulation with AVX-512
    /// VNNI `vpdpbusd`, or the same integers through i16 kernels elsewhere. Worst reference
    /// cosine to f32 0.9935. Attention and normalisation stay f32.
    Int8,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

struct Linear {
    k: usize,
    /// Laid out (and in int8 mode quantized) once at load for the kernels in use.
    w: LinearWeights,
    bias: Vec<f32>,
}

enum LinearWeights {
    F32(F32Matrix),
    Int8(QMatrix),
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln1: Norm,
    ff_in: Linear,
    ff_out: Linear,
    ln2: Norm,
}

/// One token sequence: word-piece ids and token-type ids (same length, at most the model's
/// maximum).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

pub(crate) struct Bert {
    hidden: usize,
    inter: usize,
    heads: usize,
    eps: f32,
    max_pos: usize,
    word: Vec<f32>,
    pos: Vec<f32>,
    typ: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    isa: Isa,
}

/// One GEMM's operands: `out = epi(input · Wᵀ + bias)`.
struct Gemm<'a> {
    input: &'a [f32],
    epi: Epilogue<'a>,
    out: &'a mut [f32],
}

/// A packed batch: the sequences, where each one's tokens start, and the longest length.
#[derive(Clone, Copy)]
struct Packed<'s, 'a> {
    seqs: &'s [Seq<'a>],
    starts: &'s [usize],
    max_len: usize,
}

/// Buffers one forward pass needs; grown on demand, never shrunk.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    ff: Vec<f32>,
    scores: Vec<f32>,
    qact: QAct,
    /// Where a GEMM quantizes its output for the next layer while it reads `qact`.
    qspare: QAct,
    starts: Vec<usize>,
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Bert {
    /// Lays out the weights of `tensors` (a model's safetensors, Hugging Face names with or
    /// without the `bert.` prefix) for the kernels of `isa`.
    pub(crate) fn from_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: &BertConfig,
        precision: Precision,
        isa: Isa,
    ) -> Result<Bert, EmbedError> {
        if cfg.hidden_act != "gelu" {
            return Err(EmbedError::InvalidConfig(format!("unsupported activation {:?}", cfg.hidden_act)));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(EmbedError::InvalidConfig("hidden_size must be a multiple of num_attention_heads".into()));
        }
        let mut w = Weights { tensors, prefix: String::new() };
        if !w.tensors.contains_key("embeddings.word_embeddings.weight")
            && w.tensors.contains_key("bert.embeddings.word_embeddings.weight")
        {
            w.prefix = "bert.".into();
        }
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let word = w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let pos = w.get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?;
        let typ = w.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?;
        let emb_ln = w.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            // Q, K and V as one linear layer with 3h outputs.
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_w.extend(w.get(&format!("{p}attention.self.{part}.weight"), &[h, h])?);
                qkv_b.extend(w.get(&format!("{p}attention.self.{part}.bias"), &[h])?);
            }
            layers.push(Layer {
                qkv: Linear::new(qkv_w, qkv_b, 3 * h, h, precision, isa),
                attn_out: w.linear(&format!("{p}attention.output.dense"), h, h, precision, isa)?,
                ln1: w.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                ff_in: w.linear(&format!("{p}intermediate.dense"), i, h, precision, isa)?,
                ff_out: w.linear(&format!("{p}output.dense"), h, i, precision, isa)?,
                ln2: w.norm(&format!("{p}output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            hidden: h,
            inter: i,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
            max_pos: cfg.max_position_embeddings,
            word,
            pos,
            typ,
            emb_ln,
            layers,
            isa,
        })
    }

    /// Embeds `seqs` (each non-empty, at most `max_position_embeddings` long), writing one
    /// unit-length vector per sequence into `out`. `threads > 1` splits each step over the
    /// current rayon pool (for batches too few to keep every thread busy on its own).
    pub(crate) fn forward(&self, seqs: &[Seq<'_>], threads: usize, sc: &mut Scratch, out: &mut [Vec<f32>]) {
        assert_eq!(seqs.len(), out.len());
        let (h, heads) = (self.hidden, self.heads);
        sc.starts.clear();
        let mut total = 0;
        let mut max_len = 0;
        for s in seqs {
            assert!(!s.ids.is_empty() && s.ids.len() <= self.max_pos && s.ids.len() == s.type_ids.len());
            sc.starts.push(total);
            total += s.ids.len();
            max_len = max_len.max(s.ids.len());
        }
        if total == 0 {
            return;
        }
        grow(&mut sc.x, total * h);
        grow(&mut sc.qkv, total * 3 * h);
        grow(&mut sc.ctx, total * h);
        grow(&mut sc.tmp, total * h);
        grow(&mut sc.ff, total * self.inter);
        grow(&mut sc.scores, threads.max(1) * (max_len + h / heads) * max_len);

        self.embed_tokens(seqs, &mut sc.x[..total * h], threads);
        let (x, tmp) = (&mut sc.x[..total * h], &mut sc.tmp[..total * h]);
        // In int8 mode each LayerNorm also quantizes its output for the next linear layer
        // (`quantized`: `sc.qact` already holds that layer's input).
        let mut quantized = false;
        for (l, layer) in self.layers.iter().enumerate() {
            let qkv = &mut sc.qkv[..total * 3 * h];
            let g = Gemm { input: x, epi: Epilogue::Bias, out: qkv };
            self.linear(&layer.qkv, g, threads, &mut sc.qact, quantized);
            let batch = Packed { seqs, starts: &sc.starts, max_len };
            self.attention(&batch, qkv, &mut sc.scores, &mut sc.ctx, threads);
            // tmp = x + attention output; x = LayerNorm(tmp).
            let ctx = &sc.ctx[..total * h];
            let g = Gemm { input: ctx, epi: Epilogue::Residual(x), out: tmp };
            self.linear(&layer.attn_out, g, threads, &mut sc.qact, false);
            quantized = self.norm_into(tmp, x, &layer.ln1, threads, Some(&layer.ff_in), &mut sc.qact);
            let ff = &mut sc.ff[..total * self.inter];
            let acts = (&mut sc.qact, &mut sc.qspare);
            let g = Gemm { input: x, epi: Epilogue::Gelu, out: ff };
            quantized = self.linear_then(&layer.ff_in, g, threads, acts, quantized, &layer.ff_out);
            let g = Gemm { input: ff, epi: Epilogue::Residual(x), out: tmp };
            self.linear(&layer.ff_out, g, threads, &mut sc.qact, quantized);
            let next = self.layers.get(l + 1).map(|n| &n.qkv);
            quantized = self.norm_into(tmp, x, &layer.ln2, threads, next, &mut sc.qact);
        }
        for ((s, &start), o) in seqs.iter().zip(&sc.starts).zip(out.iter_mut()) {
            let n = s.ids.len();
            let mut v = vec![0f32; h];
            for row in sc.x[start * h..(start + n) * h].chunks_exact(h) {
                for (a, b) in v.iter_mut().zip(row) {
                    *a += b;
                }
            }
            // Mean pooling then L2 normalisation; the 1/n of the mean cancels except in the clamp.
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt() / n as f32;
            let scale = 1.0 / (n as f32 * norm.max(1e-12));
            for a in &mut v {
                *a *= scale;
            }
            *o = v;
        }
    }

    fn embed_tokens(&self, seqs: &[Seq<'_>], x: &mut [f32], threads: usize) {
        let h = self.hidden;
        let mut t = 0;
        for s in seqs {
            for (p, (&id, &tt)) in s.ids.iter().zip(s.type_ids).enumerate() {
                let id = (id as usize).min(self.word.len() / h - 1);
                let tt = (tt as usize).min(self.typ.len() / h - 1);
                let row = &mut x[t * h..(t + 1) * h];
                let (w, ps, ty) = (&self.word[id * h..][..h], &self.pos[p * h..][..h], &self.typ[tt * h..][..h]);
                for j in 0..h {
                    row[j] = w[j] + ps[j] + ty[j];
                }
                t += 1;
            }
        }
        let (norm, eps, isa) = (&self.emb_ln, self.eps, self.isa);
        par_rows(x, h, threads, |rows| kernels::layer_norm(isa, rows, &norm.gamma, &norm.beta, eps));
    }

    /// `g.out = g.epi(g.input · Wᵀ + bias)` over all `rows = input.len() / k` rows; in int8
    /// mode `quantized` says `qact` already holds `input` quantized for `lin`.
    fn linear(&self, lin: &Linear, g: Gemm<'_>, threads: usize, qact: &mut QAct, quantized: bool) {
        let Gemm { input, epi, out } = g;
        match &lin.w {
            LinearWeights::Int8(q) => {
                if !quantized {
                    kernels::quantize(self.isa, threads, input, lin.k, q, qact);
                }
                kernels::qlinear(self.isa, threads, qact, q, &lin.bias, epi, out);
            }
            LinearWeights::F32(w) => kernels::linear_f32(self.isa, threads, input, w, &lin.bias, epi, out),
        }
    }

    /// [`Bert::linear`], then in int8 mode quantizes `out` for `next` into `qact` (fused with
    /// the GEMM where the kernels allow; `spare` is the second buffer that takes) and returns true.
    fn linear_then(
        &self,
        lin: &Linear,
        g: Gemm<'_>,
        threads: usize,
        (qact, spare): (&mut QAct, &mut QAct),
        quantized: bool,
        next: &Linear,
    ) -> bool {
        let (LinearWeights::Int8(q), LinearWeights::Int8(nq)) = (&lin.w, &next.w) else {
            self.linear(lin, g, threads, qact, quantized);
            return false;
        };
        let Gemm { input, epi, out } = g;
        if !quantized {
            kernels::quantize(self.isa, threads, input, lin.k, q, qact);
        }
        // The next layer's activations go to `spare` while `qact` is read; then they swap.
        kernels::qlinear_then(self.isa, threads, qact, q, &lin.bias, epi, out, Some((nq, &mut *spare)));
        std::mem::swap(qact, spare);
        true
    }

    /// Self-attention per (sequence, head) from `qkv` into `ctx` (token-major, heads side by
    /// side). Sequence by sequence, so one sequence's q, k and v stay in cache for all its heads;
    /// `threads > 1` hands whole sequences to each thread.
    fn attention(&self, batch: &Packed<'_, '_>, qkv: &[f32], scores: &mut [f32], ctx: &mut [f32], threads: usize) {
        let Packed { seqs, starts, max_len } = *batch;
        let (h, heads) = (self.hidden, self.heads);
        let total = qkv.len() / (3 * h);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let isa = self.isa;
        let per_thread = (max_len + d) * max_len;
        // Sequences `range` (their tokens start at `first`) into `ctx`, which begins at `first`.
        let run = |range: std::ops::Range<usize>, ctx: &mut [f32], scores: &mut [f32]| {
            let first = starts[range.start];
            for (s, &start) in seqs[range.clone()].iter().zip(&starts[range]) {
                let n = s.ids.len();
                let out = &mut ctx[(start - first) * h..(start - first + n) * h];
                for hd in 0..heads {
                    let base = start * 3 * h + hd * d;
                    let end = base + (n - 1) * 3 * h + d;
                    let (q, k, v) = (&qkv[base..end], &qkv[base + h..end + h], &qkv[base + 2 * h..end + 2 * h]);
                    kernels::attend(isa, q, k, v, 3 * h, n, d, scale, scores, &mut out[hd * d..], h);
                }
            }
        };
        let ctx = &mut ctx[..total * h];
        let groups = threads.min(seqs.len()).max(1);
        if groups > 1 {
            // Contiguous groups of sequences with about equal token counts.
            let mut bounds = vec![0];
            for (i, &st) in starts.iter().enumerate().skip(1) {
                if st * groups >= total * bounds.len() && bounds.len() < groups {
                    bounds.push(i);
                }
            }
            bounds.push(seqs.len());
            let mut pieces = Vec::with_capacity(groups);
            let mut rest = ctx;
            for w in bounds.windows(2) {
                let end_tok = if w[1] < seqs.len() { starts[w[1]] } else { total };
                let (piece, tail) = rest.split_at_mut((end_tok - starts[w[0]]) * h);
                pieces.push((w[0]..w[1], piece));
                rest = tail;
            }
            pieces
                .into_par_iter()
                .zip(scores[..per_thread * groups].par_chunks_mut(per_thread))
                .for_each(|((range, piece), sc)| run(range, piece, sc));
        } else {
            run(0..seqs.len(), ctx, &mut scores[..per_thread]);
        }
    }

    /// `x = LayerNorm(src)`, row by row. When `next` has int8 weights, also quantizes `x` for it
    /// into `qact` (block by block while the rows are in cache) and returns true.
    fn norm_into(
        &self,
        src: &[f32],
        x: &mut [f32],
        norm: &Norm,
        threads: usize,
        next: Option<&Linear>,
        qact: &mut QAct,
    ) -> bool {
        let (h, eps, isa) = (self.hidden, self.eps, self.isa);
        let ln = |first: usize, rows: &mut [f32]| {
            rows.copy_from_slice(&src[first * h..first * h + rows.len()]);
            kernels::layer_norm(isa, rows, &norm.gamma, &norm.beta, eps);
        };
        if let Some(Linear { w: LinearWeights::Int8(q), .. }) = next {
            kernels::quantize_after(isa, threads, x, h, q, qact, ln);
            return true;
        }
        let rows = x.len() / h;
        let per = if threads > 1 && rows > 1 { rows.div_ceil(threads) } else { rows.max(1) };
        x.par_chunks_mut(per * h).enumerate().for_each(|(c, xs)| ln(c * per, xs));
        false
    }
}

/// Runs `f` over `buf` split into at most `threads` pieces of whole rows.
fn par_rows(buf: &mut [f32], row_len: usize, threads: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let rows = buf.len() / row_len;
    if threads > 1 && rows > 1 {
        buf.par_chunks_mut(rows.div_ceil(threads) * row_len).for_each(f);
    } else {
        f(buf);
    }
}

impl Linear {
    fn new(w: Vec<f32>, bias: Vec<f32>, n: usize, k: usize, precision: Precision, isa: Isa) -> Linear {
        let w = match precision {
            Precision::F32 => LinearWeights::F32(F32Matrix::new(isa, &w, n, k)),
            Precision::Int8 => LinearWeights::Int8(QMatrix::new(isa, &w, n, k)),
        };
        Linear { k, w, bias }
    }
}

struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .ok_or_else(|| EmbedError::InvalidConfig(format!("model.safetensors lacks tensor {full}")))?;
        if t.dims() != shape {
            return Err(EmbedError::InvalidConfig(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn norm(&self, name: &str, h: usize) -> Result<Norm, EmbedError> {
        Ok(Norm { gamma: self.get(&format!("{name}.weight"), &[h])?, beta: self.get(&format!("{name}.bias"), &[h])? })
    }

    fn linear(&self, name: &str, n: usize, k: usize, precision: Precision, isa: Isa) -> Result<Linear, EmbedError> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        let b = self.get(&format!("{name}.bias"), &[n])?;
        Ok(Linear::new(w, b, n, k, precision, isa))
    }
}
