//! Training pairs drawn from labelled examples, in the manner of SetFit: two texts of the same
//! class make a positive pair (label 1), of different classes a negative one (label 0).

use std::collections::{BTreeMap, HashSet};

use keel_core::SplitMix64;

/// Two examples (indices into the caller's rows) and the target cosine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    /// 1 for the same class, 0 for different classes.
    pub label: f32,
}

/// Rows of each class, classes in label order, rows in input order.
fn classes<L: Ord>(labels: &[L]) -> Vec<Vec<usize>> {
    let mut by: BTreeMap<&L, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by.entry(l).or_default().push(i);
    }
    by.into_values().collect()
}

/// Balanced positive and negative pairs, shuffled, at most `max_pairs` in all.
///
/// Each side gets `min(max_pairs / 2, max(P, N))` pairs, where `P` and `N` count the distinct
/// unordered positive and negative pairs: as in SetFit's default "oversampling" strategy the
/// smaller side is repeated (each full round in a fresh order) to match the larger, and when a
/// side has more distinct pairs than it needs, a uniform sample of distinct pairs is drawn.
/// A side with no pair at all (every class a singleton; a single class) stays empty. Which text
/// of a pair comes first is random. The same labels, cap and seed give the same pairs.
pub fn contrastive_pairs<L: Ord>(labels: &[L], max_pairs: usize, seed: u64) -> Vec<Pair> {
    let cls = classes(labels);
    let n = labels.len();
    let p_total: usize = cls.iter().map(|c| c.len() * c.len().saturating_sub(1) / 2).sum();
    let n_total = n * n.saturating_sub(1) / 2 - p_total;
    let per_side = (max_pairs / 2).min(p_total.max(n_total));
    let mut rng = SplitMix64::new(seed);
    let mut pairs = draw(&cls, labels, true, per_side, p_total, &mut rng);
    pairs.extend(draw(&cls, labels, false, per_side, n_total, &mut rng));
    rng.shuffle(&mut pairs);
    pairs
}

/// Positive pairs only (for [`super::Loss::MultipleNegativesRanking`]): `min(max_pairs, P)`
/// distinct pairs, shuffled.
pub fn positive_pairs<L: Ord>(labels: &[L], max_pairs: usize, seed: u64) -> Vec<Pair> {
    let cls = classes(labels);
    let p_total: usize = cls.iter().map(|c| c.len() * c.len().saturating_sub(1) / 2).sum();
    let mut rng = SplitMix64::new(seed);
    let mut pairs = draw(&cls, labels, true, max_pairs.min(p_total), p_total, &mut rng);
    rng.shuffle(&mut pairs);
    pairs
}

/// `want` pairs of one side (`positive` or not) that has `unique` distinct pairs.
fn draw<L: Ord>(
    cls: &[Vec<usize>],
    labels: &[L],
    positive: bool,
    want: usize,
    unique: usize,
    rng: &mut SplitMix64,
) -> Vec<Pair> {
    let label = if positive { 1.0 } else { 0.0 };
    let orient = |(i, j): (usize, usize), rng: &mut SplitMix64| {
        let (a, b) = if rng.below(2) == 0 { (i, j) } else { (j, i) };
        Pair { a, b, label }
    };
    if want == 0 || unique == 0 {
        return Vec::new();
    }
    if 2 * want < unique {
        // Few of many: rejection-sample distinct pairs.
        let mut seen = HashSet::with_capacity(want);
        let mut out = Vec::with_capacity(want);
        let weights: Vec<usize> = cls.iter().map(|c| c.len() * c.len().saturating_sub(1) / 2).collect();
        while out.len() < want {
            let (i, j) = if positive {
                let mut r = rng.below(unique);
                let mut k = 0;
                while r >= weights[k] {
                    r -= weights[k];
                    k += 1;
                }
                let c = &cls[k];
                let x = rng.below(c.len());
                let mut y = rng.below(c.len() - 1);
                if y >= x {
                    y += 1;
                }
                (c[x], c[y])
            } else {
                let (x, y) = (rng.below(labels.len()), rng.below(labels.len()));
                if labels[x] == labels[y] {
                    continue;
                }
                (x, y)
            };
            let key = (i.min(j), i.max(j));
            if seen.insert(key) {
                out.push(orient(key, rng));
            }
        }
        return out;
    }
    // All distinct pairs (at most 2 · want of them), then a shuffled prefix or whole rounds.
    let mut all = Vec::with_capacity(unique);
    if positive {
        for c in cls {
            for (x, &i) in c.iter().enumerate() {
                all.extend(c[x + 1..].iter().map(|&j| (i, j)));
            }
        }
    } else {
        for (k, c) in cls.iter().enumerate() {
            for d in &cls[k + 1..] {
                all.extend(c.iter().flat_map(|&i| d.iter().map(move |&j| (i.min(j), i.max(j)))));
            }
        }
    }
    debug_assert_eq!(all.len(), unique);
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        rng.shuffle(&mut all);
        let take = (want - out.len()).min(all.len());
        for &p in &all[..take] {
            out.push(orient(p, rng));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(labels: &[&str], pairs: &[Pair]) {
        for p in pairs {
            assert_ne!(p.a, p.b);
            assert_eq!(p.label == 1.0, labels[p.a] == labels[p.b], "{p:?}");
        }
    }

    fn distinct(pairs: &[Pair]) -> usize {
        pairs.iter().map(|p| (p.a.min(p.b), p.a.max(p.b))).collect::<HashSet<_>>().len()
    }

    #[test]
    fn balanced_capped_distinct_and_seeded() {
        let labels: Vec<&str> = (0..40).map(|i| ["pos", "neg", "neu"][i % 3]).collect();
        let pairs = contrastive_pairs(&labels, 100, 7);
        check(&labels, &pairs);
        assert_eq!(pairs.len(), 100);
        assert_eq!(pairs.iter().filter(|p| p.label == 1.0).count(), 50);
        assert_eq!(distinct(&pairs), 100, "a sample of distinct pairs when there are many");
        assert_eq!(pairs, contrastive_pairs(&labels, 100, 7));
        assert_ne!(pairs, contrastive_pairs(&labels, 100, 8));
    }

    #[test]
    fn oversamples_the_smaller_side() {
        // 2 + 3 examples: 1 + 3 = 4 positive pairs, 6 negative pairs.
        let labels = ["a", "a", "b", "b", "b"];
        let pairs = contrastive_pairs(&labels, 1000, 1);
        check(&labels, &pairs);
        assert_eq!(pairs.len(), 12);
        let pos: Vec<Pair> = pairs.iter().filter(|p| p.label == 1.0).copied().collect();
        assert_eq!(pos.len(), 6);
        assert_eq!(distinct(&pos), 4, "every positive pair appears");
        assert_eq!(distinct(&pairs), 10);
        // Exactly enough distinct pairs on a side: every one of them.
        let pairs = contrastive_pairs(&labels, 8, 1);
        assert_eq!((pairs.len(), distinct(&pairs)), (8, 8));
    }

    #[test]
    fn degenerate_labels() {
        assert!(contrastive_pairs::<u8>(&[], 10, 0).is_empty());
        let one_class = [3u8; 4];
        let pairs = contrastive_pairs(&one_class, 10, 0);
        assert_eq!(pairs.len(), 5);
        assert!(pairs.iter().all(|p| p.label == 1.0));
        let singletons = [1u8, 2, 3];
        let pairs = contrastive_pairs(&singletons, 10, 0);
        assert_eq!(pairs.len(), 3);
        assert!(pairs.iter().all(|p| p.label == 0.0));
        assert!(positive_pairs(&singletons, 10, 0).is_empty());
        let pos = positive_pairs(&["x", "y", "x", "y", "x"], 10, 4);
        assert_eq!((pos.len(), distinct(&pos)), (4, 4));
    }
}
