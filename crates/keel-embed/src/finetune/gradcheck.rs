//! Finite-difference check of the hand-written backward, in f64 on a tiny random BERT.

use keel_core::SplitMix64;

use super::float::Float;
use super::lora::{Lora, LoraConfig};
use super::loss::{Loss, loss_grad};
use super::model::{Dropout, Grads, Model, TokenIds};
use super::weights::{BertWeights, Dims, Proj};

const DIMS: Dims =
    Dims { vocab: 30, hidden: 12, heads: 2, layers: 2, inter: 20, max_pos: 8, type_vocab: 2, layer_norm_eps: 1e-12 };

/// Three pairs, two of them positive (six sequences of 3 to 6 tokens, both token types).
fn batch() -> (Vec<TokenIds>, Vec<f64>) {
    let seq = |ids: &[u32], types: &[u32]| TokenIds { ids: ids.to_vec(), type_ids: types.to_vec() };
    let texts = vec![
        seq(&[1, 7, 12, 2], &[0, 0, 0, 0]),
        seq(&[1, 25, 3, 9, 14, 2], &[0, 0, 0, 1, 1, 1]),
        seq(&[1, 11, 5, 2], &[0, 0, 0, 0]),
        seq(&[1, 7, 2], &[0, 0, 0]),
        seq(&[1, 29, 18, 4, 2], &[0, 0, 1, 1, 1]),
        seq(&[1, 11, 21, 6, 2], &[0, 0, 0, 0, 0]),
    ];
    (texts, vec![1.0, 0.0, 1.0])
}

fn loss_of(w: &BertWeights<f64>, lora: Option<&Lora<f64>>, loss: Loss, dropout: Option<Dropout>) -> f64 {
    let (texts, labels) = batch();
    let seqs: Vec<&TokenIds> = texts.iter().collect();
    let tape = Model { w, lora, threads: 1, dropout }.forward(&seqs);
    loss_grad(loss, &tape.emb, w.dims.hidden, &labels).0
}

fn grads_of(w: &BertWeights<f64>, lora: Option<&Lora<f64>>, loss: Loss, dropout: Option<Dropout>) -> Grads<f64> {
    let (texts, labels) = batch();
    let seqs: Vec<&TokenIds> = texts.iter().collect();
    let model = Model { w, lora, threads: 1, dropout };
    let tape = model.forward(&seqs);
    let (_, d) = loss_grad(loss, &tape.emb, w.dims.hidden, &labels);
    let mut g = match lora {
        Some(l) => Grads { base: None, embeddings: false, lora: Some(l.zeros_like()) },
        None => Grads { base: Some(BertWeights::zeros(w.dims)), embeddings: true, lora: None },
    };
    model.backward(&seqs, &tape, &d, &mut g);
    g
}

/// Central difference `(f(x + e) - f(x - e)) / 2e` at entry `k` of the tensor `pick` selects.
fn numeric(mut eval: impl FnMut(f64) -> f64, x0: f64) -> f64 {
    let e = 1e-5;
    let v = (eval(x0 + e) - eval(x0 - e)) / (2.0 * e);
    eval(x0);
    v
}

/// `|numeric - analytic| / max(|numeric|, |analytic|)`, or the absolute difference when both are
/// below 1e-7 (entries with no gradient to speak of).
fn rel_err(num: f64, ana: f64) -> f64 {
    let scale = num.abs().max(ana.abs());
    if scale < 1e-7 { (num - ana).abs() } else { (num - ana).abs() / scale }
}

/// Entries to probe in a tensor of `len` values: for the embedding tables, entries of rows the
/// batch uses (the others have no gradient).
fn sample(name: &str, len: usize, h: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let (texts, _) = batch();
    let rows: Vec<usize> = if name.contains("word_embeddings") {
        texts.iter().flat_map(|t| t.ids.iter().map(|&i| i as usize)).collect()
    } else if name.contains("position_embeddings") {
        (0..6).collect()
    } else if name.contains("token_type") {
        vec![0, 1]
    } else {
        return (0..6).map(|_| rng.below(len)).collect();
    };
    (0..6).map(|_| rows[rng.below(rows.len())] * h + rng.below(h)).collect()
}

#[test]
fn full_fine_tuning_gradients_match_finite_differences() {
    // With dropout the masks are fixed by the seed, so the loss is a smooth function of the weights.
    let dropout = Some(Dropout { p: 0.2, seed: 77 });
    for (loss, dropout) in [
        (Loss::CosineSimilarity, None),
        (Loss::MultipleNegativesRanking { scale: 20.0 }, None),
        (Loss::CosineSimilarity, dropout),
    ] {
        let mut w = BertWeights::<f64>::random(DIMS, 0.5, 11).unwrap();
        let g = grads_of(&w, None, loss, dropout);
        let g = g.base.unwrap();
        let grads: Vec<Vec<f64>> = g.tensors().into_iter().map(|(_, _, _, t)| t.to_vec()).collect();
        let mut rng = SplitMix64::new(5);
        let mut worst = 0f64;
        let n = w.tensors().len();
        for t in 0..n {
            let (name, len) = {
                let ts = w.tensors();
                (ts[t].0.clone(), ts[t].3.len())
            };
            let (mut group, mut largest) = (0f64, 0f64);
            for k in sample(&name, len, DIMS.hidden, &mut rng) {
                let x0 = w.tensors()[t].3[k];
                let num = numeric(
                    |x| {
                        w.tensors_mut()[t].3[k] = x;
                        loss_of(&w, None, loss, dropout)
                    },
                    x0,
                );
                let err = rel_err(num, grads[t][k]);
                assert!(err < 1e-5, "{loss:?} {dropout:?} {name}[{k}]: numeric {num:e}, analytic {:e}", grads[t][k]);
                group = group.max(err);
                largest = largest.max(num.abs());
            }
            // The key bias adds `q_i · b` to every score of row i, which the softmax cancels: its
            // gradient is zero (the check above confirms the numeric one is too).
            if !name.ends_with("attention.self.key.bias") {
                assert!(largest > 1e-5, "{loss:?} {dropout:?} {name}: no sampled entry has a gradient ({largest:e})");
            }
            println!("{loss:?} {dropout:?} {name}: max relative error {group:.1e} (largest |gradient| {largest:.1e})");
            worst = worst.max(group);
        }
        println!("{loss:?} {dropout:?}: {n} tensors, worst relative error {worst:.1e}");
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let w = BertWeights::<f64>::random(DIMS, 0.5, 12).unwrap();
    let cfg = LoraConfig { rank: 3, alpha: 6.0, targets: Proj::ALL.to_vec() };
    let mut lora = Lora::<f64>::new(&cfg, &DIMS, 3).unwrap();
    // B starts at zero, which would leave A without gradient: give it values.
    let mut rng = SplitMix64::new(8);
    for ad in &mut lora.adapters {
        ad.b.iter_mut().for_each(|b| *b = rng.signed_unit() * 0.3);
    }
    let loss = Loss::CosineSimilarity;
    let dropout = Some(Dropout { p: 0.1, seed: 5 });
    let g = grads_of(&w, Some(&lora), loss, dropout).lora.unwrap();
    let grads: Vec<Vec<f64>> = g.tensors().into_iter().map(|(_, _, t)| t.to_vec()).collect();
    let mut worst = 0f64;
    let n = grads.len();
    for (t, grad) in grads.iter().enumerate() {
        let name = lora.tensors()[t].0.clone();
        let len = grad.len();
        let (mut group, mut largest) = (0f64, 0f64);
        for _ in 0..6 {
            let k = rng.below(len);
            let x0 = lora.tensors()[t].2[k];
            let num = numeric(
                |x| {
                    lora.tensors_mut()[t].2[k] = x;
                    loss_of(&w, Some(&lora), loss, dropout)
                },
                x0,
            );
            let err = rel_err(num, grad[k]);
            assert!(err < 1e-5, "{name}[{k}]: numeric {num:e}, analytic {:e}", grad[k]);
            group = group.max(err);
            largest = largest.max(num.abs());
        }
        assert!(largest > 1e-5, "{name}: no sampled entry has a gradient ({largest:e})");
        println!("LoRA {name}: max relative error {group:.1e} (largest |gradient| {largest:.1e})");
        worst = worst.max(group);
    }
    println!("LoRA: {n} tensors, worst relative error {worst:.1e}");

    // The unmerged forward equals the forward of the merged weights.
    let mut merged = w.clone();
    for ad in &lora.adapters {
        let lin = merged.layers[ad.layer].proj_mut(ad.proj);
        let s = lora.scale();
        for o in 0..ad.n_out {
            for i in 0..ad.n_in {
                lin.w[o * ad.n_in + i] +=
                    s * (0..cfg.rank).map(|r| ad.b[o * cfg.rank + r] * ad.a[r * ad.n_in + i]).sum::<f64>();
            }
        }
    }
    let (a, b) = (loss_of(&w, Some(&lora), loss, dropout), loss_of(&merged, None, loss, dropout));
    assert!((a - b).abs() < 1e-12, "unmerged {a} vs merged {b}");
}

#[test]
fn f32_forward_matches_f64() {
    let w64 = BertWeights::<f64>::random(DIMS, 0.5, 13).unwrap();
    let w32: BertWeights<f32> = w64.cast();
    let (texts, _) = batch();
    let seqs: Vec<&TokenIds> = texts.iter().collect();
    let e64 = Model { w: &w64, lora: None, threads: 1, dropout: None }.forward(&seqs).emb;
    let e32 = Model { w: &w32, lora: None, threads: 1, dropout: None }.forward(&seqs).emb;
    let max = e64.iter().zip(&e32).map(|(a, b)| (a - b.to_f64()).abs()).fold(0.0, f64::max);
    assert!(max < 1e-5, "max |f32 - f64| {max:e}");
    for e in e64.chunks_exact(DIMS.hidden) {
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn dropout_masks_are_seeded_and_scaled() {
    let w = BertWeights::<f64>::random(DIMS, 0.5, 13).unwrap();
    let (texts, _) = batch();
    let seqs: Vec<&TokenIds> = texts.iter().collect();
    let run = |dropout| Model { w: &w, lora: None, threads: 1, dropout }.forward(&seqs).emb;
    let (plain, a, b, c) = (
        run(None),
        run(Some(Dropout { p: 0.1, seed: 1 })),
        run(Some(Dropout { p: 0.1, seed: 1 })),
        run(Some(Dropout { p: 0.1, seed: 2 })),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, plain);
    assert_eq!(run(Some(Dropout { p: 0.0, seed: 1 })), plain);
    // The share of dropped values and the scale of the kept ones.
    let m: Vec<f64> = Dropout { p: 0.25, seed: 3 }.mask(1, 40_000);
    let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
    assert!((dropped - 0.25).abs() < 0.01, "dropped {dropped}");
    assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-15));
}
