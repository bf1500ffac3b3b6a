//! Compact, exact encodings for artifacts and checkpoints: f32 arrays (and f16 ones, for
//! weights rounded to half precision) as base64 of their little-endian bytes inside JSON, and a little-endian binary writer/reader for checkpoints.

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

/// The IEEE binary16 value nearest to `x` (ties to even), as bits; beyond the largest finite
/// half (65504) it saturates instead of becoming infinite. NaN becomes the largest finite half.
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    const MAX: u16 = 0x7bff;
    if exp == 0xff {
        return sign | MAX;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | MAX;
    }
    if e <= 0 {
        // A subnormal half: the value in units of 2^-24, rounded; 1024 units is the smallest normal.
        let shift = (14 - e) as u32;
        if shift > 24 {
            return sign;
        }
        let full = man | 0x80_0000;
        let (q, rem, half) = (full >> shift, full & ((1 << shift) - 1), 1u32 << (shift - 1));
        let q = if rem > half || (rem == half && q & 1 == 1) { q + 1 } else { q };
        return sign | q as u16;
    }
    let (mut e, mut m) = (e as u32, man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && m & 1 == 1) {
        m += 1;
        if m == 0x400 {
            m = 0;
            e += 1;
            if e >= 0x1f {
                return sign | MAX;
            }
        }
    }
    sign | (e << 10) as u16 | m as u16
}

/// The f32 equal to a binary16 value (exact: every half is an f32).
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = (u32::from(h) & 0x8000) << 16;
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    match e {
        0 => {
            let v = m as f32 * f32::from_bits(0x3380_0000); // m · 2^-24
            if sign != 0 { -v } else { v }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (m << 13)),
        _ => f32::from_bits(sign | ((e + 112) << 23) | (m << 13)),
    }
}

pub(crate) fn f16s_to_b64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 2);
    for &x in v {
        bytes.extend_from_slice(&f32_to_f16_bits(x).to_le_bytes());
    }
    STANDARD.encode(bytes)
}

pub(crate) fn b64_to_f16s(s: &str) -> Result<Vec<f32>, TrainError> {
    let bytes = STANDARD.decode(s).map_err(|e| TrainError::InvalidArtifact(format!("bad base64: {e}")))?;
    if bytes.len() % 2 != 0 {
        return Err(TrainError::InvalidArtifact("f16 array length is not a multiple of 2".into()));
    }
    Ok(bytes.chunks_exact(2).map(|c| f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_half_round_trips_through_f32() {
        for h in 0..=u16::MAX {
            if (h >> 10) & 0x1f == 0x1f {
                continue;
            }
            let x = f16_bits_to_f32(h);
            assert_eq!(f32_to_f16_bits(x), h, "{h:#06x} -> {x}");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_and_saturates() {
        assert_eq!(f16_bits_to_f32(0x3c00), 1.0);
        assert_eq!(f16_bits_to_f32(0xc000), -2.0);
        assert_eq!(f16_bits_to_f32(0x0001), 2f32.powi(-24));
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // Halfway between subnormals 1 and 2 (units of 2^-24) goes to 2; below half a unit, to 0.
        assert_eq!(f32_to_f16_bits(1.5 * 2f32.powi(-24)), 0x0002);
        assert_eq!(f32_to_f16_bits(0.4 * 2f32.powi(-24)), 0x0000);
        assert_eq!(f32_to_f16_bits(-0.4 * 2f32.powi(-24)), 0x8000);
        // The largest subnormal rounds up into the smallest normal.
        assert_eq!(f32_to_f16_bits(2f32.powi(-14) - 2f32.powi(-26)), 0x0400);
        assert_eq!(f32_to_f16_bits(65504.0), 0x7bff);
        assert_eq!(f32_to_f16_bits(1e9), 0x7bff);
        assert_eq!(f32_to_f16_bits(-1e9), 0xfbff);
        assert_eq!(f32_to_f16_bits(65519.0), 0x7bff);
    }
}
