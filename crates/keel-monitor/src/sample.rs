//! Seeded sampling on keel-core's [`SplitMix64`].

use keel_core::SplitMix64;

/// The first `k` of `0..n` in a seeded random order (all of them when `k >= n`), sorted.
pub(crate) fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if k < n {
        SplitMix64::new(seed).shuffle(&mut idx);
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}
