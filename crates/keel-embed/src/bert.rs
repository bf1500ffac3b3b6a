//! Keel's own BERT forward pass on the CPU (fp32 or int8 weights), with mean pooling and L2
//! normalisation, as sentence-transformers computes them.
//!
//! Sequences are packed, not padded: a batch is the concatenation of its sequences' tokens, every
//! linear layer runs once over all of them, and attention runs per (sequence, head) over that
//! sequence's own tokens, so no work is spent on padding and no mask is needed.
//! All intermediate buffers live in a [`Scratch`] that is reused across layers and batches.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::EmbedError;
use crate::kernels::{self, Isa, Mat, QMatrix};

/// Numeric precision of the linear layers' weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and arithmetic: matches sentence-transformers to cosine ≥ 0.9999.
    #[default]
    F32,
    /// Weights quantized to int8 per output channel at load; activations quantized per row at
    /// run time (to 14-bit integers: 8-bit ones missed cosine 0.99 on short inputs); i32
    /// accumulation with AVX-512 VNNI. Attention and normalisation stay f32.
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
    n: usize,
    k: usize,
    /// `k x n` row-major (the transpose of PyTorch's layout, so the GEMM reads it without
    /// repacking); empty in int8 mode.
    wt: Vec<f32>,
    q: Option<QMatrix>,
    bias: Vec<f32>,
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
    precision: Precision,
}

/// Buffers one forward pass needs; grown on demand, never shrunk.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    ctx_heads: Vec<f32>,
    tmp: Vec<f32>,
    ff: Vec<f32>,
    scores: Vec<f32>,
    qa: Vec<i16>,
    qs: Vec<f32>,
    starts: Vec<usize>,
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Bert {
    pub(crate) fn load(dir: &Path, cfg: &BertConfig, precision: Precision, isa: Isa) -> Result<Bert, EmbedError> {
        if cfg.hidden_act != "gelu" {
            return Err(EmbedError::InvalidConfig(format!("unsupported activation {:?}", cfg.hidden_act)));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(EmbedError::InvalidConfig("hidden_size must be a multiple of num_attention_heads".into()));
        }
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
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
                qkv: Linear::new(qkv_w, qkv_b, 3 * h, h, precision),
                attn_out: w.linear(&format!("{p}attention.output.dense"), h, h, precision)?,
                ln1: w.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                ff_in: w.linear(&format!("{p}intermediate.dense"), i, h, precision)?,
                ff_out: w.linear(&format!("{p}output.dense"), h, i, precision)?,
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
            precision,
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
        grow(&mut sc.ctx_heads, total * h);
        grow(&mut sc.tmp, total * h);
        grow(&mut sc.ff, total * self.inter);
        grow(&mut sc.scores, heads * max_len * max_len);
        if self.precision == Precision::Int8 {
            grow(&mut sc.qa, total * self.inter.max(h));
            grow(&mut sc.qs, total);
        }

        self.embed_tokens(seqs, &mut sc.x[..total * h], threads);
        for layer in &self.layers {
            self.linear(&layer.qkv, &sc.x[..total * h], &mut sc.qkv[..total * 3 * h], threads, &mut sc.qa, &mut sc.qs);
            self.attention(seqs, sc, total, max_len, threads);
            self.linear(
                &layer.attn_out,
                &sc.ctx[..total * h],
                &mut sc.tmp[..total * h],
                threads,
                &mut sc.qa,
                &mut sc.qs,
            );
            self.add_norm(&mut sc.x[..total * h], &sc.tmp[..total * h], &layer.ln1, threads);
            let ff = &mut sc.ff[..total * self.inter];
            self.linear(&layer.ff_in, &sc.x[..total * h], ff, threads, &mut sc.qa, &mut sc.qs);
            let isa = self.isa;
            par_rows(ff, self.inter, threads, |rows| kernels::gelu_in_place(isa, rows));
            self.linear(
                &layer.ff_out,
                &sc.ff[..total * self.inter],
                &mut sc.tmp[..total * h],
                threads,
                &mut sc.qa,
                &mut sc.qs,
            );
            self.add_norm(&mut sc.x[..total * h], &sc.tmp[..total * h], &layer.ln2, threads);
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
        let (norm, eps) = (&self.emb_ln, self.eps);
        par_rows(x, h, threads, |rows| {
            for row in rows.chunks_exact_mut(h) {
                layer_norm(row, norm, eps);
            }
        });
    }

    /// `out = input · Wᵀ + bias` over all `rows = input.len() / k` rows.
    fn linear(&self, lin: &Linear, input: &[f32], out: &mut [f32], threads: usize, qa: &mut [i16], qs: &mut [f32]) {
        let rows = input.len() / lin.k;
        match &lin.q {
            Some(q) => {
                let (qa, qs) = (&mut qa[..rows * lin.k], &mut qs[..rows]);
                let k = lin.k;
                if threads > 1 {
                    let per = rows.div_ceil(threads);
                    input
                        .par_chunks(per * k)
                        .zip(qa.par_chunks_mut(per * k))
                        .zip(qs.par_chunks_mut(per))
                        .for_each(|((x, a), s)| kernels::quantize_rows(x, k, a, s));
                } else {
                    kernels::quantize_rows(input, k, qa, qs);
                }
                kernels::qgemm(self.isa, threads, qa, qs, q, &lin.bias, out);
            }
            None => {
                for row in out.chunks_exact_mut(lin.n) {
                    row.copy_from_slice(&lin.bias);
                }
                kernels::sgemm(
                    self.isa,
                    threads,
                    (rows, lin.n, lin.k),
                    Mat::rows(input, lin.k),
                    Mat::rows(&lin.wt, lin.n),
                    1.0,
                    true,
                    out,
                    lin.n,
                );
            }
        }
    }

    /// Self-attention per (sequence, head) from `sc.qkv` into `sc.ctx`.
    fn attention(&self, seqs: &[Seq<'_>], sc: &mut Scratch, total: usize, max_len: usize, threads: usize) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let isa = self.isa;
        let qkv = &sc.qkv[..total * 3 * h];
        let starts = &sc.starts;
        let head = |hd: usize, ctx: &mut [f32], scores: &mut [f32]| {
            for (s, &start) in seqs.iter().zip(starts) {
                let n = s.ids.len();
                let base = start * 3 * h + hd * d;
                let end = base + (n - 1) * 3 * h + d;
                let (q, k, v) = (&qkv[base..end], &qkv[base + h..end + h], &qkv[base + 2 * h..end + 2 * h]);
                kernels::attend(isa, q, k, v, 3 * h, n, d, scale, scores, &mut ctx[start * d..(start + n) * d]);
            }
        };
        let ctx_heads = &mut sc.ctx_heads[..total * h];
        let scores = &mut sc.scores[..heads * max_len * max_len];
        if threads > 1 {
            ctx_heads
                .par_chunks_mut(total * d)
                .zip(scores.par_chunks_mut(max_len * max_len))
                .enumerate()
                .for_each(|(hd, (c, s))| head(hd, c, s));
        } else {
            for (hd, (c, s)) in ctx_heads.chunks_mut(total * d).zip(scores.chunks_mut(max_len * max_len)).enumerate() {
                head(hd, c, s);
            }
        }
        // Head-major [heads][total][d] → token-major [total][h].
        let ctx = &mut sc.ctx[..total * h];
        for (hd, src) in ctx_heads.chunks_exact(total * d).enumerate() {
            for (t, piece) in src.chunks_exact(d).enumerate() {
                ctx[t * h + hd * d..t * h + (hd + 1) * d].copy_from_slice(piece);
            }
        }
    }

    /// `x = LayerNorm(x + add)`, row by row.
    fn add_norm(&self, x: &mut [f32], add: &[f32], norm: &Norm, threads: usize) {
        let (h, eps) = (self.hidden, self.eps);
        let f = |(xs, adds): (&mut [f32], &[f32])| {
            for (row, a) in xs.chunks_exact_mut(h).zip(adds.chunks_exact(h)) {
                for (r, v) in row.iter_mut().zip(a) {
                    *r += v;
                }
                layer_norm(row, norm, eps);
            }
        };
        let rows = x.len() / h;
        if threads > 1 && rows > 1 {
            let per = rows.div_ceil(threads) * h;
            x.par_chunks_mut(per).zip(add.par_chunks(per)).for_each(f);
        } else {
            f((x, add));
        }
    }
}

fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((r, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *r = (*r - mean) * inv * g + b;
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
    fn new(w: Vec<f32>, bias: Vec<f32>, n: usize, k: usize, precision: Precision) -> Linear {
        match precision {
            Precision::F32 => {
                let mut wt = vec![0f32; n * k];
                for j in 0..n {
                    for kk in 0..k {
                        wt[kk * n + j] = w[j * k + kk];
                    }
                }
                Linear { n, k, wt, q: None, bias }
            }
            Precision::Int8 => Linear { n, k, q: Some(QMatrix::new(&w, n, k)), wt: Vec::new(), bias },
        }
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

    fn linear(&self, name: &str, n: usize, k: usize, precision: Precision) -> Result<Linear, EmbedError> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        let b = self.get(&format!("{name}.bias"), &[n])?;
        Ok(Linear::new(w, b, n, k, precision))
    }
}
