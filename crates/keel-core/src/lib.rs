//! Keel's domain types, shared by every stage of the pipeline.
//!
//! This crate does no IO: no files, no SQL, no HTTP, no clocks. Everything here is a value
//! that other crates produce or consume.

mod hash;
mod matrix;
mod record;

pub use hash::{ContentHash, Hasher, sha256_hex};
pub use matrix::Matrix;
pub use record::{Quarantined, Record, Split};
