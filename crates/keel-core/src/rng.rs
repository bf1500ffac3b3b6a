//! SplitMix64 (Steele, Lea and Flood; Vigna's constants): the one seeded generator of Keel.
//!
//! Its whole state is one `u64`, so a checkpoint can store it ([`SplitMix64::state`]) and a
//! resumed run draws exactly the numbers the uninterrupted run would have; and its outputs are
//! fixed by the code here, across platforms and releases, which a dependency's generator does
//! not promise. Every seeded split, bootstrap, shuffle, dropout mask and HNSW level in the
//! workspace comes from it, so changing a method here changes artifacts: add a method instead.

/// The golden-ratio increment of SplitMix64's state.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state is `seed` (so `SplitMix64::new(rng.state())` continues `rng`'s
    /// sequence).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The internal state.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// What the `k`-th call of [`SplitMix64::next_u64`] (from 0) on `SplitMix64::new(seed)`
    /// returns, without the calls before it.
    pub fn nth(seed: u64, k: u64) -> u64 {
        mix(seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (the high 64 bits of
    /// `next_u64() * n`): one draw, a bias below `n / 2^64`.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)` with 24 random bits (the top ones; exact in f32).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in `[0, 1)` with 53 random bits (the top ones; exact in f64).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `(0, 1]` with 53 random bits: never 0, so its logarithm is finite.
    pub fn unit_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform in `[-1, 1)` with 53 random bits.
    pub fn signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Fisher-Yates shuffle, from the last element down, each swap partner by
    /// [`SplitMix64::below`].
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// SplitMix64's output function (a variant of murmur3's 64-bit finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published SplitMix64 sequence for seed 1234567 (as in Vigna's `splitmix64.c`).
    #[test]
    fn known_outputs() {
        let mut r = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821
            ]
        );
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn nth_matches_the_sequence() {
        let mut r = SplitMix64::new(42);
        for k in 0..5 {
            assert_eq!(r.next_u64(), SplitMix64::nth(42, k));
        }
    }

    #[test]
    fn state_continues_the_sequence() {
        let mut r = SplitMix64::new(9);
        r.next_u64();
        let mut s = SplitMix64::new(r.state());
        assert_eq!(r.next_u64(), s.next_u64());
    }

    /// Reference values computed outside Rust (Python integers and floats) for seed 7.
    #[test]
    fn helpers_give_the_reference_values() {
        let draw = |f: fn(&mut SplitMix64) -> f64| {
            let mut r = SplitMix64::new(7);
            (0..3).map(|_| f(&mut r)).collect::<Vec<f64>>()
        };
        assert_eq!(draw(SplitMix64::unit), UNIT);
        assert_eq!(draw(SplitMix64::unit_nonzero), UNIT_NONZERO);
        assert_eq!(draw(SplitMix64::signed_unit), SIGNED_UNIT);
        let mut r = SplitMix64::new(7);
        assert_eq!((0..3).map(|_| r.unit_f32()).collect::<Vec<f32>>(), UNIT_F32);
        let mut r = SplitMix64::new(7);
        assert_eq!((0..5).map(|_| r.below(10)).collect::<Vec<usize>>(), BELOW_10);
        let mut v: Vec<u32> = (0..10).collect();
        SplitMix64::new(7).shuffle(&mut v);
        assert_eq!(v, SHUFFLED_10);
    }

    const UNIT: [f64; 3] = [0.3898297483912715, 0.01678829452815611, 0.9007606806068834];
    const UNIT_NONZERO: [f64; 3] = [0.3898297483912716, 0.016788294528156222, 0.9007606806068835];
    const SIGNED_UNIT: [f64; 3] = [-0.22034050321745702, -0.9664234109436878, 0.8015213612137668];
    const UNIT_F32: [f32; 3] = [0.389_829_7, 0.016_788_244, 0.900_760_65];
    const BELOW_10: [usize; 5] = [3, 0, 9, 5, 4];
    const SHUFFLED_10: [u32; 10] = [9, 5, 8, 6, 1, 2, 4, 7, 0, 3];
}
