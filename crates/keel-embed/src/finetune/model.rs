//! The trainable BERT forward (packed sequences, as the inference forward) that records what its
//! backward needs, and the backward itself.

use keel_core::SplitMix64;
use rayon::prelude::*;

use super::float::{Float, Out, View, gelu, gelu_grad};
use super::lora::Lora;
use super::weights::{BertWeights, Norm, Proj};

/// Word-piece ids and token-type ids of one text, specials included (as the tokenizer gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// Gradients of what trains: the base weights (full fine-tuning; the embedding tables only when
/// `embeddings`) or the LoRA adapters.
#[derive(Debug, Clone)]
pub(crate) struct Grads<T> {
    pub base: Option<BertWeights<T>>,
    pub embeddings: bool,
    pub lora: Option<Lora<T>>,
}

impl<T: Float> Grads<T> {
    pub fn fill_zero(&mut self) {
        if let Some(b) = &mut self.base {
            b.fill_zero();
        }
        if let Some(l) = &mut self.lora {
            l.fill_zero();
        }
    }
}

/// `(x - mean) / sqrt(var + eps)` and `1 / sqrt(var + eps)` of every row of a LayerNorm input.
struct NormTape<T> {
    xhat: Vec<T>,
    rstd: Vec<T>,
}

/// Inverted dropout as BERT applies it in training (after the embeddings' LayerNorm, on the
/// attention probabilities, on the attention and feed-forward outputs before their residual
/// add): each value is kept with probability `1 - p` and scaled by `1 / (1 - p)`. The masks are a
/// function of `seed`, the site and the position, so a step can be replayed exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dropout {
    pub p: f64,
    pub seed: u64,
}

impl Dropout {
    /// Factors (0 or `1 / (1 - p)`) for `n` values of dropout site `site`.
    pub(crate) fn mask<T: Float>(&self, site: u64, n: usize) -> Vec<T> {
        let stream = SplitMix64::nth(self.seed, site);
        // Drop when a uniform 64-bit draw falls below p · 2⁶⁴.
        let threshold = (self.p * 18_446_744_073_709_551_616.0) as u64;
        let keep = T::from_f64(1.0 / (1.0 - self.p));
        (0..n as u64).map(|k| if SplitMix64::nth(stream, k) < threshold { T::ZERO } else { keep }).collect()
    }
}

/// Dropout sites: the embeddings, then three per layer.
const SITE_EMB: u64 = 0;
fn site(layer: usize, which: u64) -> u64 {
    1 + 3 * layer as u64 + which
}

fn mul_in_place<T: Float>(xs: &mut [T], mask: &[T]) {
    for (x, &m) in xs.iter_mut().zip(mask) {
        *x *= m;
    }
}

struct LayerTape<T> {
    /// Layer input `[n][h]`.
    x: Vec<T>,
    /// Query, key and value side by side, `[n][3h]`.
    qkv: Vec<T>,
    /// Attention probabilities, per sequence `[heads][len][len]`.
    probs: Vec<T>,
    ctx: Vec<T>,
    ln1: NormTape<T>,
    /// Output of the first LayerNorm, input of the feed-forward block.
    x1: Vec<T>,
    /// Feed-forward pre-activation `[n][inter]` and its GELU.
    u: Vec<T>,
    g: Vec<T>,
    ln2: NormTape<T>,
    /// `x · Aᵀ` of each adapted projection (indexed by `Proj as usize`).
    mids: [Option<Vec<T>>; 6],
    /// Dropout factors on the attention probabilities and the attention and feed-forward outputs.
    drop: Option<[Vec<T>; 3]>,
}

/// What [`Model::backward`] needs from a [`Model::forward`].
pub(crate) struct Tape<T> {
    starts: Vec<usize>,
    lens: Vec<usize>,
    emb_ln: NormTape<T>,
    emb_drop: Option<Vec<T>>,
    layers: Vec<LayerTape<T>>,
    /// Norm of each sequence's mean-pooled vector.
    norms: Vec<T>,
    /// The unit-length embeddings `[sequences][h]`.
    pub emb: Vec<T>,
}

/// One linear layer's backward inputs: projection `p` of layer `l`, its input `x`, and the
/// gradient of its output `dy`, whose rows are `ldy` apart.
struct LinearGrad<'a, T> {
    l: usize,
    p: Proj,
    x: &'a [T],
    dy: &'a [T],
    ldy: usize,
}

/// Base weights, optional adapters and a thread count.
pub(crate) struct Model<'a, T> {
    pub w: &'a BertWeights<T>,
    pub lora: Option<&'a Lora<T>>,
    /// `> 1`: matrix products and attention split over the current rayon pool.
    pub threads: usize,
    /// Training-mode dropout; `None` in evaluation.
    pub dropout: Option<Dropout>,
}

/// Splits `buf` into consecutive pieces of the given sizes.
fn split_sizes<T>(mut buf: &mut [T], sizes: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for n in sizes {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(n);
        out.push(head);
        buf = rest;
    }
    out
}

/// Where each piece starts when pieces of these sizes are laid end to end.
fn prefix_sums(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    sizes
        .scan(0, |acc, n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect()
}

fn layer_norm_fwd<T: Float>(src: &[T], norm: &Norm<T>, eps: T, out: &mut [T]) -> NormTape<T> {
    let h = norm.gamma.len();
    let inv_h = T::ONE / T::from_f64(h as f64);
    let mut xhat = vec![T::ZERO; src.len()];
    let mut rstd = Vec::with_capacity(src.len() / h);
    for ((row, xh), o) in src.chunks_exact(h).zip(xhat.chunks_exact_mut(h)).zip(out.chunks_exact_mut(h)) {
        let mean = row.iter().copied().sum::<T>() * inv_h;
        let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() * inv_h;
        let r = T::ONE / (var + eps).sqrt();
        for j in 0..h {
            xh[j] = (row[j] - mean) * r;
            o[j] = xh[j] * norm.gamma[j] + norm.beta[j];
        }
        rstd.push(r);
    }
    NormTape { xhat, rstd }
}

/// `dx = d LayerNorm / d input · dy`; adds the scale and shift gradients into `grad`.
fn layer_norm_bwd<T: Float>(tape: &NormTape<T>, gamma: &[T], dy: &[T], dx: &mut [T], grad: Option<&mut Norm<T>>) {
    let h = gamma.len();
    let inv_h = T::ONE / T::from_f64(h as f64);
    let mut dxhat = vec![T::ZERO; h];
    for (((dyr, xh), dxr), &r) in
        dy.chunks_exact(h).zip(tape.xhat.chunks_exact(h)).zip(dx.chunks_exact_mut(h)).zip(&tape.rstd)
    {
        let (mut m1, mut m2) = (T::ZERO, T::ZERO);
        for j in 0..h {
            dxhat[j] = dyr[j] * gamma[j];
            m1 += dxhat[j];
            m2 += dxhat[j] * xh[j];
        }
        let (m1, m2) = (m1 * inv_h, m2 * inv_h);
        for j in 0..h {
            dxr[j] = r * (dxhat[j] - m1 - xh[j] * m2);
        }
    }
    if let Some(g) = grad {
        for (dyr, xh) in dy.chunks_exact(h).zip(tape.xhat.chunks_exact(h)) {
            for j in 0..h {
                g.gamma[j] += dyr[j] * xh[j];
                g.beta[j] += dyr[j];
            }
        }
    }
}

/// `a · b`, summed in 8 interleaved partial sums (so it vectorises) in a fixed order.
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    let mut acc = [T::ZERO; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.into_iter().sum::<T>() + tail
}

/// `acc += s · x`.
fn axpy<T: Float>(acc: &mut [T], s: T, x: &[T]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += s * v;
    }
}

/// One sequence's attention: `n` tokens, hidden size `h` in `heads` heads.
#[derive(Clone, Copy)]
struct Heads {
    n: usize,
    h: usize,
    heads: usize,
}

/// Self-attention of one sequence: `qkv` its `[n][3h]` rows, `probs` `[heads][n][n]` (before
/// dropout), `drop` dropout factors laid out as `probs`, `ctx` `[n][h]`.
fn attend_fwd<T: Float>(qkv: &[T], shape: Heads, probs: &mut [T], drop: Option<&[T]>, ctx: &mut [T]) {
    let Heads { n, h, heads } = shape;
    let d = h / heads;
    let scale = T::ONE / T::from_f64(d as f64).sqrt();
    for hd in 0..heads {
        let p = &mut probs[hd * n * n..(hd + 1) * n * n];
        for i in 0..n {
            let q = &qkv[i * 3 * h + hd * d..][..d];
            let row = &mut p[i * n..(i + 1) * n];
            let mut max = T::from_f64(f64::NEG_INFINITY);
            for (j, r) in row.iter_mut().enumerate() {
                *r = scale * dot(q, &qkv[j * 3 * h + h + hd * d..][..d]);
                max = max.max(*r);
            }
            let mut sum = T::ZERO;
            for r in row.iter_mut() {
                *r = (*r - max).exp();
                sum += *r;
            }
            let inv = T::ONE / sum;
            let out = &mut ctx[i * h + hd * d..][..d];
            out.fill(T::ZERO);
            for (j, r) in row.iter_mut().enumerate() {
                *r *= inv;
                let pd = drop.map_or(*r, |m| *r * m[(hd * n + i) * n + j]);
                axpy(out, pd, &qkv[j * 3 * h + 2 * h + hd * d..][..d]);
            }
        }
    }
}

/// The backward of [`attend_fwd`]: from `dctx` (`[n][h]`) into `dqkv` (`[n][3h]`, overwritten).
fn attend_bwd<T: Float>(qkv: &[T], shape: Heads, probs: &[T], drop: Option<&[T]>, dctx: &[T], dqkv: &mut [T]) {
    let Heads { n, h, heads } = shape;
    let d = h / heads;
    let scale = T::ONE / T::from_f64(d as f64).sqrt();
    dqkv.fill(T::ZERO);
    let mut ds = vec![T::ZERO; n];
    let mut dq = vec![T::ZERO; d];
    for hd in 0..heads {
        let p = &probs[hd * n * n..(hd + 1) * n * n];
        for i in 0..n {
            let prow = &p[i * n..(i + 1) * n];
            let dc = &dctx[i * h + hd * d..][..d];
            // With D the dropout factors: dP_ij = D_ij (dctx_i · v_j); dv_j += P_ij D_ij dctx_i.
            let mut rowdot = T::ZERO;
            for j in 0..n {
                let m = drop.map_or(T::ONE, |m| m[(hd * n + i) * n + j]);
                let v = &qkv[j * 3 * h + 2 * h + hd * d..][..d];
                ds[j] = m * dot(dc, v);
                rowdot += prow[j] * ds[j];
                axpy(&mut dqkv[j * 3 * h + 2 * h + hd * d..][..d], prow[j] * m, dc);
            }
            // dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik); dq_i += scale dS_ij k_j; dk_j += scale dS_ij q_i.
            let qi = &qkv[i * 3 * h + hd * d..][..d];
            dq.fill(T::ZERO);
            for j in 0..n {
                let s = scale * prow[j] * (ds[j] - rowdot);
                axpy(&mut dq, s, &qkv[j * 3 * h + h + hd * d..][..d]);
                axpy(&mut dqkv[j * 3 * h + h + hd * d..][..d], s, qi);
            }
            for (o, &g) in dqkv[i * 3 * h + hd * d..][..d].iter_mut().zip(&dq) {
                *o += g;
            }
        }
    }
}

/// Runs `f` on each item, over the current rayon pool when `threads > 1`.
fn each<I: Send, F: Fn(I) + Sync + Send>(items: Vec<I>, threads: usize, f: F) {
    if threads > 1 && items.len() > 1 {
        items.into_par_iter().for_each(f);
    } else {
        items.into_iter().for_each(f);
    }
}

/// Applies `f` to each element, in chunks over the current rayon pool when `threads > 1`.
fn map_in_place<T: Float>(xs: &mut [T], threads: usize, f: impl Fn(&mut T) + Sync + Send) {
    if threads > 1 && xs.len() >= 4096 {
        xs.par_chunks_mut(xs.len().div_ceil(threads)).for_each(|c| c.iter_mut().for_each(&f));
    } else {
        xs.iter_mut().for_each(f);
    }
}

impl<T: Float> Model<'_, T> {
    /// Unit-length mean-pooled embeddings of `seqs` (`[sequences][hidden]`) and the tape for
    /// [`Model::backward`]. Every sequence must be non-empty and at most `max_pos` long, with ids
    /// inside the vocabularies.
    pub fn forward(&self, seqs: &[&TokenIds]) -> Tape<T> {
        let dims = self.w.dims;
        let h = dims.hidden;
        let mut starts = Vec::with_capacity(seqs.len());
        let mut lens = Vec::with_capacity(seqs.len());
        let mut total = 0;
        for s in seqs {
            let n = s.ids.len();
            assert!(n > 0 && n <= dims.max_pos && n == s.type_ids.len(), "bad sequence length {n}");
            starts.push(total);
            lens.push(n);
            total += n;
        }
        let mut x = vec![T::ZERO; total * h];
        let mut t = 0;
        for s in seqs {
            for (p, (&id, &tt)) in s.ids.iter().zip(&s.type_ids).enumerate() {
                let (id, tt) = (id as usize, tt as usize);
                assert!(id < dims.vocab && tt < dims.type_vocab, "token id {id} or type {tt} out of range");
                let row = &mut x[t * h..(t + 1) * h];
                let (w, ps, ty) = (&self.w.word[id * h..][..h], &self.w.pos[p * h..][..h], &self.w.typ[tt * h..][..h]);
                for j in 0..h {
                    row[j] = w[j] + ps[j] + ty[j];
                }
                t += 1;
            }
        }
        let eps = T::from_f64(dims.layer_norm_eps);
        let mut y = vec![T::ZERO; total * h];
        let emb_ln = layer_norm_fwd(&x, &self.w.emb_ln, eps, &mut y);
        let emb_drop = self.dropout.map(|d| d.mask(SITE_EMB, y.len()));
        if let Some(m) = &emb_drop {
            mul_in_place(&mut y, m);
        }
        let mut x = y;
        let mut layers = Vec::with_capacity(dims.layers);
        for l in 0..dims.layers {
            let (next, tape) = self.layer_fwd(l, x, &starts, &lens);
            layers.push(tape);
            x = next;
        }
        // Mean pooling, then L2 normalisation.
        let mut emb = vec![T::ZERO; seqs.len() * h];
        let mut norms = Vec::with_capacity(seqs.len());
        let tiny = T::from_f64(1e-12);
        for ((&start, &n), e) in starts.iter().zip(&lens).zip(emb.chunks_exact_mut(h)) {
            for row in x[start * h..(start + n) * h].chunks_exact(h) {
                for (a, &b) in e.iter_mut().zip(row) {
                    *a += b;
                }
            }
            let inv_n = T::ONE / T::from_f64(n as f64);
            let norm = e.iter().map(|&a| a * a * inv_n * inv_n).sum::<T>().sqrt();
            let scale = inv_n / norm.max(tiny);
            for a in e.iter_mut() {
                *a *= scale;
            }
            norms.push(norm);
        }
        Tape { starts, lens, emb_ln, emb_drop, layers, norms, emb }
    }

    fn layer_fwd(&self, l: usize, x: Vec<T>, starts: &[usize], lens: &[usize]) -> (Vec<T>, LayerTape<T>) {
        let dims = self.w.dims;
        let (h, inter, heads) = (dims.hidden, dims.inter, dims.heads);
        let layer = &self.w.layers[l];
        let rows = x.len() / h;
        let eps = T::from_f64(dims.layer_norm_eps);
        let mut mids: [Option<Vec<T>>; 6] = Default::default();

        let mut qkv = vec![T::ZERO; rows * 3 * h];
        for (p, col) in [(Proj::Query, 0), (Proj::Key, h), (Proj::Value, 2 * h)] {
            mids[p as usize] = self.linear_fwd(l, p, &x, &mut qkv[col..], 3 * h);
        }
        let n_probs: usize = lens.iter().map(|n| heads * n * n).sum();
        let masks =
            self.dropout.map(|d| [0, 1, 2].map(|w| d.mask(site(l, w), if w == 0 { n_probs } else { rows * h })));
        let mut probs = vec![T::ZERO; n_probs];
        let mut ctx = vec![T::ZERO; rows * h];
        {
            let ps = split_sizes(&mut probs, lens.iter().map(|n| heads * n * n));
            let cs = split_sizes(&mut ctx, lens.iter().map(|n| n * h));
            let pstarts = prefix_sums(lens.iter().map(|n| heads * n * n));
            let items: Vec<_> = ps.into_iter().zip(cs).zip(starts.iter().zip(lens).zip(pstarts)).collect();
            let (qkv, drop) = (&qkv, masks.as_ref().map(|d| &d[0]));
            each(items, self.threads, |((p, c), ((&start, &n), ps))| {
                let dm = drop.map(|m| &m[ps..ps + heads * n * n]);
                attend_fwd(&qkv[start * 3 * h..(start + n) * 3 * h], Heads { n, h, heads }, p, dm, c)
            });
        }
        // t1 = x + dropout(attention output); x1 = LayerNorm(t1).
        let mut t1 = vec![T::ZERO; rows * h];
        mids[Proj::AttnOut as usize] = self.linear_fwd(l, Proj::AttnOut, &ctx, &mut t1, h);
        if let Some(d) = &masks {
            mul_in_place(&mut t1, &d[1]);
        }
        for (a, &b) in t1.iter_mut().zip(&x) {
            *a += b;
        }
        let mut x1 = vec![T::ZERO; rows * h];
        let ln1 = layer_norm_fwd(&t1, &layer.ln1, eps, &mut x1);
        drop(t1);
        let mut u = vec![T::ZERO; rows * inter];
        mids[Proj::FfIn as usize] = self.linear_fwd(l, Proj::FfIn, &x1, &mut u, inter);
        let mut g = u.clone();
        map_in_place(&mut g, self.threads, |v| *v = gelu(*v));
        // t2 = x1 + dropout(feed-forward output); output = LayerNorm(t2).
        let mut t2 = vec![T::ZERO; rows * h];
        mids[Proj::FfOut as usize] = self.linear_fwd(l, Proj::FfOut, &g, &mut t2, h);
        if let Some(d) = &masks {
            mul_in_place(&mut t2, &d[2]);
        }
        for (a, &b) in t2.iter_mut().zip(&x1) {
            *a += b;
        }
        let mut out = vec![T::ZERO; rows * h];
        let ln2 = layer_norm_fwd(&t2, &layer.ln2, eps, &mut out);
        (out, LayerTape { x, qkv, probs, ctx, ln1, x1, u, g, ln2, mids, drop: masks })
    }

    /// `out[r][..n_out] = x[r] · Wᵀ + b (+ scale · (x[r] · Aᵀ) · Bᵀ)` for every row `r` of `x`,
    /// rows of `out` `ldo` apart. Returns `x · Aᵀ` when the projection has an adapter.
    fn linear_fwd(&self, l: usize, p: Proj, x: &[T], out: &mut [T], ldo: usize) -> Option<Vec<T>> {
        let lin = self.w.layers[l].proj(p);
        let (n_out, n_in) = (lin.n_out, lin.n_in);
        let rows = x.len() / n_in;
        for r in 0..rows {
            out[r * ldo..r * ldo + n_out].copy_from_slice(&lin.b);
        }
        let (xv, wt) = (View::rows(x, n_in), View::transposed(&lin.w, n_in));
        T::gemm(self.threads, (rows, n_out, n_in), xv, wt, T::ONE, Out::add(out, ldo));
        let lora = self.lora?;
        let ad = &lora.adapters[lora.index(l, p)?];
        let r = lora.rank;
        let mut mid = vec![T::ZERO; rows * r];
        T::gemm(self.threads, (rows, r, n_in), xv, View::transposed(&ad.a, n_in), T::ONE, Out::set(&mut mid, r));
        let bt = View::transposed(&ad.b, r);
        T::gemm(self.threads, (rows, n_out, r), View::rows(&mid, r), bt, lora.scale(), Out::add(out, ldo));
        Some(mid)
    }

    /// Adds the gradient of `sum(d_emb ⊙ embeddings)` with respect to what `grads` holds.
    pub fn backward(&self, seqs: &[&TokenIds], tape: &Tape<T>, d_emb: &[T], grads: &mut Grads<T>) {
        let dims = self.w.dims;
        let h = dims.hidden;
        assert_eq!(d_emb.len(), tape.emb.len());
        let total: usize = tape.lens.iter().sum();
        // Through L2 normalisation and mean pooling.
        let mut dx = vec![T::ZERO; total * h];
        let tiny = T::from_f64(1e-12);
        for s in 0..tape.lens.len() {
            let (e, de) = (&tape.emb[s * h..(s + 1) * h], &d_emb[s * h..(s + 1) * h]);
            let n = tape.lens[s];
            let c = dot(e, de);
            let k = T::ONE / (tape.norms[s].max(tiny) * T::from_f64(n as f64));
            let start = tape.starts[s];
            for row in dx[start * h..(start + n) * h].chunks_exact_mut(h) {
                for j in 0..h {
                    row[j] = (de[j] - e[j] * c) * k;
                }
            }
        }
        for l in (0..dims.layers).rev() {
            let need_dx = l > 0 || grads.base.is_some();
            dx = self.layer_bwd(l, tape, dx, grads, need_dx);
        }
        let Some(base) = grads.base.as_mut() else { return };
        if let Some(m) = &tape.emb_drop {
            mul_in_place(&mut dx, m);
        }
        let mut de = vec![T::ZERO; total * h];
        layer_norm_bwd(&tape.emb_ln, &self.w.emb_ln.gamma, &dx, &mut de, Some(&mut base.emb_ln));
        if grads.embeddings {
            let mut t = 0;
            for s in seqs {
                for (p, (&id, &tt)) in s.ids.iter().zip(&s.type_ids).enumerate() {
                    let g = &de[t * h..(t + 1) * h];
                    for (dst, off) in [(&mut base.word, id as usize), (&mut base.pos, p), (&mut base.typ, tt as usize)]
                    {
                        for (a, &b) in dst[off * h..(off + 1) * h].iter_mut().zip(g) {
                            *a += b;
                        }
                    }
                    t += 1;
                }
            }
        }
    }

    /// From the gradient of layer `l`'s output to that of its input (empty unless `need_dx`).
    fn layer_bwd(&self, l: usize, tape: &Tape<T>, dy: Vec<T>, grads: &mut Grads<T>, need_dx: bool) -> Vec<T> {
        let (starts, lens, tape) = (&tape.starts[..], &tape.lens[..], &tape.layers[l]);
        let dims = self.w.dims;
        let (h, inter, heads) = (dims.hidden, dims.inter, dims.heads);
        let layer = &self.w.layers[l];
        let rows = dy.len() / h;

        let mut dt2 = vec![T::ZERO; rows * h];
        let g = grads.base.as_mut().map(|b| &mut b.layers[l].ln2);
        layer_norm_bwd(&tape.ln2, &layer.ln2.gamma, &dy, &mut dt2, g);
        drop(dy);
        let mut du = vec![T::ZERO; rows * inter];
        match &tape.drop {
            Some(d) => {
                let mut dff = dt2.clone();
                mul_in_place(&mut dff, &d[2]);
                self.linear_bwd(
                    LinearGrad { l, p: Proj::FfOut, x: &tape.g, dy: &dff, ldy: h },
                    Some(&mut du),
                    tape,
                    grads,
                );
            }
            None => self.linear_bwd(
                LinearGrad { l, p: Proj::FfOut, x: &tape.g, dy: &dt2, ldy: h },
                Some(&mut du),
                tape,
                grads,
            ),
        }
        {
            let threads = self.threads;
            if threads > 1 && du.len() >= 4096 {
                let per = du.len().div_ceil(threads);
                du.par_chunks_mut(per).zip(tape.u.par_chunks(per)).for_each(|(d, u)| {
                    d.iter_mut().zip(u).for_each(|(d, &u)| *d *= gelu_grad(u));
                });
            } else {
                du.iter_mut().zip(&tape.u).for_each(|(d, &u)| *d *= gelu_grad(u));
            }
        }
        let mut dx1 = dt2;
        self.linear_bwd(LinearGrad { l, p: Proj::FfIn, x: &tape.x1, dy: &du, ldy: inter }, Some(&mut dx1), tape, grads);
        drop(du);
        let mut dt1 = vec![T::ZERO; rows * h];
        let g = grads.base.as_mut().map(|b| &mut b.layers[l].ln1);
        layer_norm_bwd(&tape.ln1, &layer.ln1.gamma, &dx1, &mut dt1, g);
        drop(dx1);
        let mut dctx = vec![T::ZERO; rows * h];
        match &tape.drop {
            Some(d) => {
                let mut dattn = dt1.clone();
                mul_in_place(&mut dattn, &d[1]);
                self.linear_bwd(
                    LinearGrad { l, p: Proj::AttnOut, x: &tape.ctx, dy: &dattn, ldy: h },
                    Some(&mut dctx),
                    tape,
                    grads,
                );
            }
            None => self.linear_bwd(
                LinearGrad { l, p: Proj::AttnOut, x: &tape.ctx, dy: &dt1, ldy: h },
                Some(&mut dctx),
                tape,
                grads,
            ),
        }
        let mut dqkv = vec![T::ZERO; rows * 3 * h];
        {
            let ds = split_sizes(&mut dqkv, lens.iter().map(|n| n * 3 * h));
            let items: Vec<_> = ds.into_iter().zip(starts.iter().zip(lens)).collect();
            let (qkv, probs, dctx) = (&tape.qkv, &tape.probs, &dctx);
            let drop = tape.drop.as_ref().map(|d| &d[0]);
            let pstarts = prefix_sums(lens.iter().map(|n| heads * n * n));
            each(items.into_iter().zip(pstarts).collect(), self.threads, |((dq, (&start, &n)), ps)| {
                let p = &probs[ps..ps + heads * n * n];
                let dm = drop.map(|m| &m[ps..ps + heads * n * n]);
                let q = &qkv[start * 3 * h..(start + n) * 3 * h];
                attend_bwd(q, Heads { n, h, heads }, p, dm, &dctx[start * h..(start + n) * h], dq)
            });
        }
        drop(dctx);
        let mut dx = if need_dx { dt1 } else { Vec::new() };
        for (p, col) in [(Proj::Query, 0), (Proj::Key, h), (Proj::Value, 2 * h)] {
            let dx = if need_dx { Some(&mut dx[..]) } else { None };
            self.linear_bwd(LinearGrad { l, p, x: &tape.x, dy: &dqkv[col..], ldy: 3 * h }, dx, tape, grads);
        }
        dx
    }

    /// For `y = x · Wᵀ + b (+ scale · x · Aᵀ · Bᵀ)` with `dy` (see [`LinearGrad`]): adds `dy · W'`
    /// to `dx` (if given) and the weight (full) or adapter (LoRA) gradients to `grads`.
    fn linear_bwd(&self, at: LinearGrad<'_, T>, dx: Option<&mut [T]>, tape: &LayerTape<T>, grads: &mut Grads<T>) {
        let LinearGrad { l, p, x, dy, ldy } = at;
        let lin = self.w.layers[l].proj(p);
        let (n_out, n_in) = (lin.n_out, lin.n_in);
        let rows = x.len() / n_in;
        let th = self.threads;
        let dyv = View { data: dy, rs: ldy, cs: 1 };
        let dyt = View { data: dy, rs: 1, cs: ldy };
        if let Some(base) = grads.base.as_mut() {
            let g = base.layers[l].proj_mut(p);
            T::gemm(th, (n_out, n_in, rows), dyt, View::rows(x, n_in), T::ONE, Out::add(&mut g.w, n_in));
            for r in 0..rows {
                for (b, &d) in g.b.iter_mut().zip(&dy[r * ldy..r * ldy + n_out]) {
                    *b += d;
                }
            }
        }
        let mut dx = dx;
        if let Some((lora, i)) = self.lora.and_then(|lora| lora.index(l, p).map(|i| (lora, i)))
            && (grads.lora.is_some() || dx.is_some())
        {
            let ad = &lora.adapters[i];
            let (r, s) = (lora.rank, lora.scale());
            // dmid = s dy B; dB += s dyᵀ mid; dA += dmidᵀ x; dx += dmid A.
            let mut dmid = vec![T::ZERO; rows * r];
            T::gemm(th, (rows, r, n_out), dyv, View::rows(&ad.b, r), s, Out::set(&mut dmid, r));
            if let Some(gl) = grads.lora.as_mut() {
                let ga = &mut gl.adapters[i];
                let mid = tape.mids[p as usize].as_ref().expect("adapter input recorded");
                T::gemm(th, (n_out, r, rows), dyt, View::rows(mid, r), s, Out::add(&mut ga.b, r));
                let dmt = View::transposed(&dmid, r);
                T::gemm(th, (r, n_in, rows), dmt, View::rows(x, n_in), T::ONE, Out::add(&mut ga.a, n_in));
            }
            if let Some(dx) = dx.as_deref_mut() {
                T::gemm(th, (rows, n_in, r), View::rows(&dmid, r), View::rows(&ad.a, n_in), T::ONE, Out::add(dx, n_in));
            }
        }
        if let Some(dx) = dx {
            T::gemm(th, (rows, n_in, n_out), dyv, View::rows(&lin.w, n_in), T::ONE, Out::add(dx, n_in));
        }
    }
}
