//! keel-train's seeding of keel-core's [`SplitMix64`]: the state starts at the seed XOR a salt
//! (`"keeltrn!"`), so this crate's streams differ from another crate's given the same seed.
//! A checkpoint stores the generator's [`SplitMix64::state`] and restores it with
//! `SplitMix64::new(state)` (no salt): a resumed run draws what the uninterrupted one would have.

pub(crate) use keel_core::{SplitMix64, fnv1a};

/// The salt XORed into every seed.
const SALT: u64 = 0x6b65_656c_7472_6e21;

/// The generator for `seed`.
pub(crate) fn seeded(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ SALT)
}
