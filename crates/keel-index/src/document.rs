//! Documents from files: plain text and Markdown (the file's text as it is), HTML (tags
//! stripped, entities decoded and whitespace collapsed by keel-data's normaliser), JSONL (one
//! document per line: a text field, the other scalar fields as metadata) and CSV/TSV (a text
//! column, the other columns as metadata). A folder is walked recursively in name order.
//!
//! A line or row without usable text is a [`Skipped`] entry with its reason, never an error and
//! never silently lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_core::{ContentHash, Hasher};
use serde::{Deserialize, Serialize};

use crate::IndexError;

/// One document: what gets chunked, embedded and indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable identity: the file path for whole-file formats, `path#id` for JSONL and CSV rows
    /// (the id field or column when there is one, else the 1-based line or row number).
    pub id: String,
    /// The file it came from.
    pub source: String,
    /// The text chunk offsets refer to.
    pub text: String,
    /// Field → value, matched by search filters.
    pub metadata: BTreeMap<String, String>,
}

impl Document {
    /// Hash of text and metadata: a document whose hash is unchanged is not re-indexed.
    pub fn content_hash(&self) -> ContentHash {
        let mut h = Hasher::new();
        h.field(self.text.as_bytes());
        for (k, v) in &self.metadata {
            h.field(k.as_bytes()).field(v.as_bytes());
        }
        h.finish()
    }
}

/// A line, row or file that gave no document, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub source: String,
    /// 1-based line (JSONL) or record (CSV) number; 0 for a whole file.
    pub line: u64,
    pub reason: String,
}

/// How to read structured files.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// JSONL field / CSV column holding the text.
    pub text_field: String,
    /// JSONL field / CSV column holding the document id; `None`: `id` or `_id` when present.
    pub id_field: Option<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self { text_field: "text".into(), id_field: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Html,
    Jsonl,
    Csv(u8),
}

fn kind(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "text" | "md" | "markdown" | "rst" => Kind::Text,
        "html" | "htm" => Kind::Html,
        "jsonl" | "ndjson" => Kind::Jsonl,
        "csv" => Kind::Csv(b','),
        "tsv" | "tab" => Kind::Csv(b'\t'),
        _ => return None,
    })
}

/// Reads every document under `path` (a file or a folder).
pub fn read_documents(path: &Path, opts: &ReadOptions) -> Result<(Vec<Document>, Vec<Skipped>), IndexError> {
    let meta = std::fs::metadata(path).map_err(|e| IndexError::io(path, e))?;
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    if meta.is_dir() {
        let root = std::fs::canonicalize(path).map_err(|e| IndexError::io(path, e))?;
        walk(path, (path, &root), &mut files, &mut skipped)?;
    } else {
        files.push(path.to_path_buf());
    }
    let mut docs = Vec::new();
    for f in files {
        // Sources (and so document ids) are relative to the folder indexed, so moving or
        // re-mounting the folder does not make every document look new.
        let rel = if meta.is_dir() {
            f.strip_prefix(path).unwrap_or(&f)
        } else {
            Path::new(f.file_name().unwrap_or(f.as_os_str()))
        };
        let source = rel.display().to_string();
        match kind(&f) {
            None if meta.is_dir() => skipped.push(Skipped {
                source,
                line: 0,
                reason: "not a text, Markdown, HTML, JSONL or CSV file".into(),
            }),
            None => {
                return Err(IndexError::Invalid(format!(
                    "{source}: unknown file type; use .txt, .md, .html, .jsonl or .csv"
                )));
            }
            Some(k) => read_file(&f, &source, k, opts, &mut docs, &mut skipped)?,
        }
    }
    Ok((docs, skipped))
}

/// The files under `dir`, in name order, hidden ones left out. A symbolic link is followed only
/// to a file inside the folder indexed (`top`, canonically `root`); one that leads out of it,
/// or to a folder (which could loop), is skipped with the reason, so indexing a folder never
/// reads what lies outside it.
fn walk(
    dir: &Path,
    (top, root): (&Path, &Path),
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), IndexError> {
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(|e| IndexError::io(dir, e))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_str().is_some_and(|n| n.starts_with('.')))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::path);
    for e in entries {
        let p = e.path();
        let source = || p.strip_prefix(top).unwrap_or(&p).display().to_string();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            let target = std::fs::canonicalize(&p);
            let why = match &target {
                Err(_) => Some("a symbolic link to nothing: not followed".to_owned()),
                Ok(t) if !t.starts_with(root) => {
                    Some("a symbolic link out of the folder indexed: not followed".to_owned())
                }
                Ok(t) if t.is_dir() => Some("a symbolic link to a folder: not followed".to_owned()),
                Ok(_) => None,
            };
            match why {
                Some(reason) => skipped.push(Skipped { source: source(), line: 0, reason }),
                None => out.push(p),
            }
        } else if ft.is_dir() {
            walk(&p, (top, root), out, skipped)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn read_file(
    path: &Path,
    source: &str,
    kind: Kind,
    opts: &ReadOptions,
    docs: &mut Vec<Document>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), IndexError> {
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    let Ok(content) = String::from_utf8(bytes) else {
        skipped.push(Skipped { source: source.into(), line: 0, reason: "not valid UTF-8".into() });
        return Ok(());
    };
    let whole = |text: String, docs: &mut Vec<Document>, skipped: &mut Vec<Skipped>| {
        if text.trim().is_empty() {
            skipped.push(Skipped { source: source.into(), line: 0, reason: "no text".into() });
        } else {
            docs.push(Document { id: source.into(), source: source.into(), text, metadata: BTreeMap::new() });
        }
    };
    match kind {
        Kind::Text => whole(content, docs, skipped),
        Kind::Html => whole(keel_data::normalize(&content, true).into_owned(), docs, skipped),
        Kind::Jsonl => {
            for (i, line) in content.lines().enumerate() {
                let n = i as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                let skip = |reason: String| Skipped { source: source.into(), line: n, reason };
                let obj = match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(o)) => o,
                    Ok(_) => {
                        skipped.push(skip("not a JSON object".into()));
                        continue;
                    }
                    Err(e) => {
                        skipped.push(skip(format!("invalid JSON: {e}")));
                        continue;
                    }
                };
                let mut fields: BTreeMap<String, String> = BTreeMap::new();
                for (k, v) in obj {
                    let s = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(x) => x.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => continue,
                    };
                    fields.insert(k, s);
                }
                push_row(source, n, fields, opts, docs, skipped);
            }
        }
        Kind::Csv(delim) => {
            let mut rdr = csv::ReaderBuilder::new().delimiter(delim).flexible(true).from_reader(content.as_bytes());
            let headers = rdr.headers().map_err(|e| IndexError::format(path, e.to_string()))?.clone();
            if !headers.iter().any(|h| h == opts.text_field) {
                return Err(IndexError::Invalid(format!(
                    "{source}: no column {:?} (columns: {}); choose one with --text-field",
                    opts.text_field,
                    headers.iter().collect::<Vec<_>>().join(", ")
                )));
            }
            for (i, rec) in rdr.records().enumerate() {
                let n = i as u64 + 1;
                match rec {
                    Ok(r) => {
                        let fields = headers.iter().zip(r.iter()).map(|(h, v)| (h.to_owned(), v.to_owned())).collect();
                        push_row(source, n, fields, opts, docs, skipped);
                    }
                    Err(e) => skipped.push(Skipped { source: source.into(), line: n, reason: e.to_string() }),
                }
            }
        }
    }
    Ok(())
}

fn push_row(
    source: &str,
    n: u64,
    mut fields: BTreeMap<String, String>,
    opts: &ReadOptions,
    docs: &mut Vec<Document>,
    skipped: &mut Vec<Skipped>,
) {
    let text = fields.remove(&opts.text_field).unwrap_or_default();
    if text.trim().is_empty() {
        skipped.push(Skipped { source: source.into(), line: n, reason: format!("no text in {:?}", opts.text_field) });
        return;
    }
    let id = match &opts.id_field {
        Some(f) => fields.get(f).cloned(),
        None => fields.get("id").or_else(|| fields.get("_id")).cloned(),
    }
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| n.to_string());
    docs.push(Document { id: format!("{source}#{id}"), source: source.into(), text, metadata: fields });
}
