//! Compact, exact encodings for artifacts and checkpoints: f32 arrays as base64 of their
//! little-endian bytes inside JSON, and a little-endian binary writer/reader for checkpoints.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::TrainError;

pub(crate) fn f32s_to_b64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

pub(crate) fn b64_to_f32s(s: &str) -> Result<Vec<f32>, TrainError> {
    let bytes = STANDARD.decode(s).map_err(|e| TrainError::InvalidArtifact(format!("bad base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(TrainError::InvalidArtifact("f32 array length is not a multiple of 4".into()));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

pub(crate) fn u32s_to_b64(v: &[u32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

pub(crate) fn b64_to_u32s(s: &str) -> Result<Vec<u32>, TrainError> {
    let bytes = STANDARD.decode(s).map_err(|e| TrainError::InvalidArtifact(format!("bad base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(TrainError::InvalidArtifact("u32 array length is not a multiple of 4".into()));
    }
    Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Little-endian binary writer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Reader for [`Writer`]'s format; every read is bounds-checked.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TrainError> {
        if self.0.len() < n {
            return Err(TrainError::InvalidCheckpoint("truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, TrainError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, TrainError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(crate) fn f32s(&mut self, expect: usize) -> Result<Vec<f32>, TrainError> {
        let n = self.u64()? as usize;
        if n != expect {
            return Err(TrainError::InvalidCheckpoint(format!("array of {n} values where {expect} were expected")));
        }
        let b = self.take(n.checked_mul(4).ok_or_else(|| TrainError::InvalidCheckpoint("length overflow".into()))?)?;
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}
