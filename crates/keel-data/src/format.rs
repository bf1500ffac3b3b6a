//! The layouts Keel reads, and the guess from a file's name.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::input;

/// How a file is laid out. `None` in [`ReadOptions::format`] means: decide from the extension
/// (`.csv` comma, `.tsv`/`.tab`/`.txt` tab, `.jsonl`/`.ndjson` JSON lines, after removing a
/// `.gz`/`.bz2` one) and the content (a delimiter that splits the first rows consistently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Delimited { delimiter: u8 },
    JsonLines,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = input::inner_path(path).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Delimited { delimiter: b',' }),
            "tsv" | "tab" | "txt" => Some(Format::Delimited { delimiter: b'\t' }),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }
}
