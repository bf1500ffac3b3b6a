use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use keel_core::{Quarantined, Record};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// How a file is laid out. `None` in [`ReadOptions::format`] means: decide from the extension
/// (`.csv` comma, `.tsv`/`.tab`/`.txt` tab, `.jsonl`/`.ndjson` JSON lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Delimited { delimiter: u8 },
    JsonLines,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Delimited { delimiter: b',' }),
            "tsv" | "tab" | "txt" => Some(Format::Delimited { delimiter: b'\t' }),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// Which columns hold what. A column is named by its header, or by its 0-based position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadOptions {
    pub text_col: String,
    pub label_col: Option<String>,
    pub id_col: Option<String>,
    pub format: Option<Format>,
    /// Whether the first row of a delimited file names the columns.
    pub has_header: bool,
    /// Rows to skip after the header (Orange `.tab` files carry two type rows there).
    pub skip_after_header: usize,
    /// Read at most this many data rows.
    pub limit: Option<usize>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            text_col: "text".into(),
            label_col: Some("label".into()),
            id_col: None,
            format: None,
            has_header: true,
            skip_after_header: 0,
            limit: None,
        }
    }
}

/// Everything read from one file. Invariant: `rows_read == records.len() + quarantined.len()`.
#[derive(Debug, Default)]
pub struct Ingested {
    pub source: String,
    pub rows_read: u64,
    pub records: Vec<Record>,
    pub quarantined: Vec<Quarantined>,
}

/// Reads a labelled table. Every data row becomes a record or a quarantined row.
pub fn read_table(path: &Path, opts: &ReadOptions) -> Result<Ingested, DataError> {
    let shown = path.display().to_string();
    let format = opts.format.or_else(|| Format::from_path(path)).ok_or_else(|| DataError::Format {
        path: shown.clone(),
        message: "unknown file type; use a .csv, .tsv, .tab or .jsonl file, or pass --format".into(),
    })?;
    let file = File::open(path).map_err(|source| DataError::Io { path: shown.clone(), source })?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("row").to_owned();
    let mut out = Ingested { source: shown.clone(), ..Default::default() };
    let mut sink = Sink { stem, source: shown, opts, out: &mut out };
    match format {
        Format::Delimited { delimiter } => read_delimited(BufReader::new(file), delimiter, &mut sink)?,
        Format::JsonLines => read_jsonl(BufReader::new(file), &mut sink)?,
    }
    Ok(out)
}

/// Where rows go once their fields are known: validation happens here, once for every format.
struct Sink<'a> {
    stem: String,
    source: String,
    opts: &'a ReadOptions,
    out: &'a mut Ingested,
}

struct Fields<'a> {
    line: u64,
    raw: String,
    text: Result<Option<&'a str>, String>,
    label: Result<Option<&'a str>, String>,
    id: Result<Option<&'a str>, String>,
}

impl Sink<'_> {
    fn full(&self) -> bool {
        self.opts.limit.is_some_and(|l| self.out.rows_read >= l as u64)
    }

    fn quarantine(&mut self, line: u64, reason: String, raw: String) {
        self.out.quarantined.push(Quarantined { source: self.source.clone(), line, reason, raw });
    }

    fn accept(&mut self, f: Fields<'_>) {
        self.out.rows_read += 1;
        let reason = match (&f.text, &f.label, &f.id) {
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(e.clone()),
            (Ok(None), _, _) => Some("missing text: the row has no text column".into()),
            (Ok(Some(t)), _, _) if t.trim().is_empty() => {
                Some("empty text: the text is empty or only whitespace".into())
            }
            (_, Ok(label), _) if self.opts.label_col.is_some() && label.is_none_or(|l| l.trim().is_empty()) => {
                Some("missing label: the label column is empty".into())
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return self.quarantine(f.line, reason, f.raw);
        }
        let id = match f.id {
            Ok(Some(id)) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => format!("{}:{}", self.stem, f.line),
        };
        self.out.records.push(Record {
            id,
            text: f.text.unwrap_or_default().unwrap_or_default().to_owned(),
            label: f.label.ok().flatten().map(|l| l.trim().to_owned()),
            line: f.line,
        });
    }
}

fn column_index(header: Option<&[String]>, col: &str, path: &str) -> Result<usize, DataError> {
    if let Some(h) = header {
        if let Some(i) = h.iter().position(|c| c == col) {
            return Ok(i);
        }
        if let Some(i) = h.iter().position(|c| c.eq_ignore_ascii_case(col)) {
            return Ok(i);
        }
    }
    col.parse::<usize>().map_err(|_| DataError::MissingColumn {
        path: path.to_owned(),
        column: col.to_owned(),
        available: header
            .map(|h| h.join(", "))
            .unwrap_or_else(|| "no header (name columns by 0-based position)".into()),
    })
}

fn read_delimited(input: impl Read, delimiter: u8, sink: &mut Sink<'_>) -> Result<(), DataError> {
    let mut rdr = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(false).flexible(true).from_reader(input);
    let mut rows = rdr.byte_records();
    let fmt_err = |path: &str, e: csv::Error| DataError::Format { path: path.to_owned(), message: e.to_string() };
    let header: Option<Vec<String>> = if sink.opts.has_header {
        match rows.next() {
            None => return Ok(()),
            Some(h) => {
                let h = h.map_err(|e| fmt_err(&sink.source, e))?;
                let mut names: Vec<String> = h.iter().map(|f| String::from_utf8_lossy(f).trim().to_owned()).collect();
                if let Some(first) = names.first_mut() {
                    *first = first.trim_start_matches('\u{feff}').to_owned();
                }
                Some(names)
            }
        }
    } else {
        None
    };
    let text_i = column_index(header.as_deref(), &sink.opts.text_col, &sink.source)?;
    let label_i =
        sink.opts.label_col.as_deref().map(|c| column_index(header.as_deref(), c, &sink.source)).transpose()?;
    let id_i = sink.opts.id_col.as_deref().map(|c| column_index(header.as_deref(), c, &sink.source)).transpose()?;
    let width = header.as_ref().map(Vec::len);
    for _ in 0..sink.opts.skip_after_header {
        if rows.next().is_none() {
            return Ok(());
        }
    }
    let sep = [delimiter];
    while !sink.full() {
        let Some(row) = rows.next() else { break };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                // A row the CSV parser cannot take (for example invalid UTF-8 is fine for byte
                // records, but an IO error is not) ends the file: report it as an error.
                return Err(fmt_err(&sink.source, e));
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        let raw = String::from_utf8_lossy(&row.iter().collect::<Vec<_>>().join(&sep[..])).into_owned();
        if let Some(w) = width.filter(|&w| row.len() != w) {
            sink.out.rows_read += 1;
            sink.quarantine(line, format!("wrong column count: expected {w}, found {}", row.len()), raw);
            continue;
        }
        let field = |i: Option<usize>, what: &str| -> Result<Option<&str>, String> {
            match i.and_then(|i| row.get(i)) {
                None => Ok(None),
                Some(b) => std::str::from_utf8(b).map(Some).map_err(|e| format!("invalid UTF-8 in {what}: {e}")),
            }
        };
        let f = Fields {
            line,
            raw,
            text: field(Some(text_i), "text"),
            label: field(label_i, "label"),
            id: field(id_i, "id"),
        };
        sink.accept(f);
    }
    Ok(())
}

fn read_jsonl(mut input: impl BufRead, sink: &mut Sink<'_>) -> Result<(), DataError> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    let text_col = sink.opts.text_col.clone();
    let label_col = sink.opts.label_col.clone();
    let id_col = sink.opts.id_col.clone();
    while !sink.full() {
        buf.clear();
        let n =
            input.read_until(b'\n', &mut buf).map_err(|source| DataError::Io { path: sink.source.clone(), source })?;
        if n == 0 {
            break;
        }
        line += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines between JSON objects are not rows
        }
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => {
                sink.out.rows_read += 1;
                sink.quarantine(line, "not an object: each line must be a JSON object".into(), raw);
                continue;
            }
            Err(e) => {
                sink.out.rows_read += 1;
                sink.quarantine(line, format!("invalid JSON: {e}"), raw);
                continue;
            }
        };
        let owned = |col: &Option<String>| -> Result<Option<String>, String> {
            match col.as_deref().and_then(|c| value.get(c)) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(Some(v.to_string())),
                Some(_) => {
                    Err(format!("wrong type: field {:?} must be a string or number", col.as_deref().unwrap_or("")))
                }
            }
        };
        let text = owned(&Some(text_col.clone()));
        let label = owned(&label_col);
        let id = owned(&id_col);
        let f = Fields {
            line,
            raw,
            text: text.as_ref().map(Option::as_deref).map_err(Clone::clone),
            label: label.as_ref().map(Option::as_deref).map_err(Clone::clone),
            id: id.as_ref().map(Option::as_deref).map_err(Clone::clone),
        };
        sink.accept(f);
    }
    Ok(())
}
