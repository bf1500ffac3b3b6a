//! Contrastive losses on unit-length sentence embeddings, with their gradients.

use super::float::Float;

/// The training objective on a batch of pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// SetFit's default (sentence-transformers' `CosineSimilarityLoss`): the mean over pairs of
    /// `(cos(u, v) - label)²`, label 1 for a pair of the same class and 0 otherwise.
    CosineSimilarity,
    /// sentence-transformers' `MultipleNegativesRankingLoss`: for each positive pair `(a_i, b_i)`
    /// of the batch, cross-entropy of `scale · cos(a_i, b_j)` over the batch's positive pairs'
    /// `b_j`, the target being `j = i`; negative pairs are ignored. Its default scale is 20.
    MultipleNegativesRanking { scale: f32 },
}

/// The loss and its gradient with respect to `emb`: `emb` holds `2B` unit vectors of length `h`,
/// rows `0..B` the pairs' first texts and rows `B..2B` their second; `labels` has `B` entries.
pub(crate) fn loss_grad<T: Float>(loss: Loss, emb: &[T], h: usize, labels: &[T]) -> (T, Vec<T>) {
    let b = labels.len();
    assert_eq!(emb.len(), 2 * b * h, "two embeddings per pair");
    let mut grad = vec![T::ZERO; emb.len()];
    if b == 0 {
        return (T::ZERO, grad);
    }
    let row = |i: usize| &emb[i * h..(i + 1) * h];
    let dot = |x: &[T], y: &[T]| x.iter().zip(y).map(|(&p, &q)| p * q).sum::<T>();
    match loss {
        Loss::CosineSimilarity => {
            let inv_b = T::ONE / T::from_f64(b as f64);
            let mut total = T::ZERO;
            for (i, &y) in labels.iter().enumerate() {
                let c = dot(row(i), row(b + i));
                let diff = c - y;
                total += diff * diff;
                let k = T::from_f64(2.0) * diff * inv_b;
                let (ga, gb) = grad.split_at_mut((b + i) * h);
                for j in 0..h {
                    ga[i * h + j] = k * emb[(b + i) * h + j];
                    gb[j] = k * emb[i * h + j];
                }
            }
            (total * inv_b, grad)
        }
        Loss::MultipleNegativesRanking { scale } => {
            let pos: Vec<usize> = (0..b).filter(|&i| labels[i] > T::from_f64(0.5)).collect();
            if pos.is_empty() {
                return (T::ZERO, grad);
            }
            let scale = T::from_f64(f64::from(scale));
            let inv_k = T::ONE / T::from_f64(pos.len() as f64);
            let mut total = T::ZERO;
            let mut p = vec![T::ZERO; pos.len()];
            for (r, &i) in pos.iter().enumerate() {
                let mut max = T::from_f64(f64::NEG_INFINITY);
                for (c, &j) in pos.iter().enumerate() {
                    p[c] = scale * dot(row(i), row(b + j));
                    max = max.max(p[c]);
                }
                let target = p[r];
                let mut sum = T::ZERO;
                for v in p.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                // -log softmax_r = log Σ exp - s_r.
                total += max + log(sum) - target;
                for (c, &j) in pos.iter().enumerate() {
                    // d loss / d s_rc = (softmax_c - [c = r]) / k; s_rc = scale a_i · b_j.
                    let ind = if c == r { T::ONE } else { T::ZERO };
                    let ds = (p[c] / sum - ind) * inv_k * scale;
                    for t in 0..h {
                        grad[i * h + t] += ds * emb[(b + j) * h + t];
                        grad[(b + j) * h + t] += ds * emb[i * h + t];
                    }
                }
            }
            (total * inv_k, grad)
        }
    }
}

fn log<T: Float>(x: T) -> T {
    T::from_f64(x.to_f64().ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(rows: usize, h: usize, seed: u64) -> Vec<f64> {
        let mut rng = keel_core::SplitMix64::new(seed);
        let mut v: Vec<f64> = (0..rows * h).map(|_| rng.signed_unit()).collect();
        for r in v.chunks_exact_mut(h) {
            let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (b, h) = (4, 5);
        let emb = unit_rows(2 * b, h, 9);
        let labels = [1.0, 0.0, 1.0, 1.0];
        for loss in [Loss::CosineSimilarity, Loss::MultipleNegativesRanking { scale: 20.0 }] {
            let (_, g) = loss_grad(loss, &emb, h, &labels);
            for k in 0..emb.len() {
                let eps = 1e-6;
                let (mut up, mut down) = (emb.clone(), emb.clone());
                up[k] += eps;
                down[k] -= eps;
                let fd = (loss_grad(loss, &up, h, &labels).0 - loss_grad(loss, &down, h, &labels).0) / (2.0 * eps);
                assert!((fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()), "{loss:?} entry {k}: fd {fd} analytic {}", g[k]);
            }
        }
    }

    #[test]
    fn cosine_loss_is_zero_when_cosines_equal_labels() {
        let h = 3;
        // Pair 0: identical vectors, label 1; pair 1: orthogonal vectors, label 0.
        let emb = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let (l, g) = loss_grad(Loss::CosineSimilarity, &emb, h, &[1.0f64, 0.0]);
        assert_eq!(l, 0.0);
        assert!(g.iter().all(|&x| x == 0.0));
        let (l, _) = loss_grad(Loss::CosineSimilarity, &emb, h, &[0.0f64, 1.0]);
        assert_eq!(l, 1.0);
    }
}
