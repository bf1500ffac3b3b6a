//! FNV-1a, 64-bit (Fowler, Noll and Vo): a small stable hash for hashed features, fingerprints
//! and build keys. Fixed by the code here, unlike std's `DefaultHasher`, which may change
//! between releases; not for anything an adversary chooses (use [`crate::ContentHash`]).

/// FNV-1a's 64-bit offset basis.
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a fed in pieces: `Fnv1a::new().write(a).write(b).finish()` equals [`fnv1a`]`(0, a ++ b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    /// The standard start (the offset basis).
    pub fn new() -> Self {
        Self(OFFSET_BASIS)
    }

    /// A keyed start: the offset basis XOR `seed` (so one hash gives several independent-looking
    /// families, e.g. word and character n-grams).
    pub fn with_seed(seed: u64) -> Self {
        Self(OFFSET_BASIS ^ seed)
    }

    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes`, started from the offset basis XOR `seed` (`seed = 0` is standard FNV-1a).
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    Fnv1a::with_seed(seed).write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference values of the FNV test suite, and one seeded value computed in Python.
    #[test]
    fn known_outputs() {
        assert_eq!(fnv1a(0, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(0, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(u64::from(b'w'), b"hello world"), 0xb8e9_1fc4_b0be_1482);
    }

    #[test]
    fn pieces_hash_as_the_whole() {
        assert_eq!(Fnv1a::new().write(b"foo").write(b"").write(b"bar").finish(), fnv1a(0, b"foobar"));
    }
}
