//! A minimal safetensors writer and reader for f32 tensors, with deterministic bytes: tensors in
//! name order, the JSON header with sorted keys and padded with spaces to a multiple of 8 bytes,
//! little-endian data. Files written here load with candle's (and Python's) safetensors readers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::EmbedError;

/// One named f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(message: impl Into<String>) -> EmbedError {
    EmbedError::InvalidConfig(format!("safetensors: {}", message.into()))
}

/// Serialises `tensors` (any order; written sorted by name) with string `metadata`.
pub(crate) fn write<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut sorted: Vec<(&str, &[usize], &[f32])> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for (name, shape, data) in &sorted {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor {name}: shape does not match data");
        let end = offset + 4 * data.len();
        header.insert((*name).to_string(), json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut head = serde_json::to_string(&Value::Object(header)).expect("json of strings and numbers");
    while !head.len().is_multiple_of(8) {
        head.push(' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(head.as_bytes());
    for (_, _, data) in &sorted {
        for v in *data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Parses what [`write`] produces (f32 tensors only): the tensors in name order and the metadata.
pub(crate) fn read(bytes: &[u8]) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>), EmbedError> {
    let len = bytes.get(..8).ok_or_else(|| bad("shorter than its header length"))?;
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    let body_start = 8usize.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("header past the end"))?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes[8..body_start]).map_err(|e| bad(format!("header: {e}")))?;
    let body = &bytes[body_start..];
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(v).map_err(|e| bad(format!("metadata: {e}")))?;
            continue;
        }
        if v["dtype"] != "F32" {
            return Err(bad(format!("tensor {name}: dtype {} (only F32 is read)", v["dtype"])));
        }
        let shape: Vec<usize> =
            serde_json::from_value(v["shape"].clone()).map_err(|e| bad(format!("tensor {name}: shape: {e}")))?;
        let [start, end]: [usize; 2] = serde_json::from_value(v["data_offsets"].clone())
            .map_err(|e| bad(format!("tensor {name}: data_offsets: {e}")))?;
        let n: usize = shape.iter().product();
        if end < start || end > body.len() || end - start != 4 * n {
            return Err(bad(format!("tensor {name}: data_offsets {start}..{end} do not fit shape {shape:?}")));
        }
        let data =
            body[start..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        tensors.push(NamedTensor { name, shape, data });
    }
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_candle_reads_it() {
        let a = [1.0f32, -2.5, 3.25, 0.0, 7.0, 1e-9];
        let b = [42.0f32];
        let meta = BTreeMap::from([("rank".to_string(), "4".to_string())]);
        let bytes = write([("z.w", &[2usize, 3][..], &a[..]), ("a.b", &[1usize][..], &b[..])], &meta);
        assert_eq!(bytes, write([("a.b", &[1usize][..], &b[..]), ("z.w", &[2usize, 3][..], &a[..])], &meta));
        assert!((u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize).is_multiple_of(8));
        let (tensors, m) = read(&bytes).unwrap();
        assert_eq!(m, meta);
        assert_eq!(tensors.len(), 2);
        assert_eq!((tensors[0].name.as_str(), tensors[0].data.as_slice()), ("a.b", &b[..]));
        assert_eq!((tensors[1].shape.as_slice(), tensors[1].data.as_slice()), (&[2usize, 3][..], &a[..]));

        let loaded = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).unwrap();
        assert_eq!(loaded["z.w"].dims(), &[2, 3]);
        assert_eq!(loaded["z.w"].flatten_all().unwrap().to_vec1::<f32>().unwrap(), a);

        assert!(read(&bytes[..bytes.len() - 1]).is_err());
        assert!(read(&bytes[..5]).is_err());
    }
}
