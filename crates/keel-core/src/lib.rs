//! Keel's domain types, shared by every stage of the pipeline.
//!
//! This crate does no IO: no files, no SQL, no HTTP, no clocks. Everything here is a value
//! that other crates produce or consume.

mod fnv;
mod hash;
mod matrix;
mod record;
mod rng;

pub use fnv::{Fnv1a, fnv1a};
pub use hash::{BytesHasher, ContentHash, Hasher, sha256_hex};
pub use matrix::Matrix;
pub use record::{Quarantined, Record, Split};
pub use rng::SplitMix64;
