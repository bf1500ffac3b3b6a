use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher as _};
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

use base64::Engine as _;
use keel_core::{ContentHash, Quarantined, Record};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::delimited::{self, Parser};
use crate::format::Format;
use crate::input::{self, Compression, Decompression, HashingReader};
use crate::normalize::normalize;
use crate::sniff;

/// Which columns hold what, and how rows are validated and normalised. A column is named by
/// its header, or by its 0-based position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadOptions {
    pub text_col: String,
    pub label_col: Option<String>,
    pub id_col: Option<String>,
    pub format: Option<Format>,
    /// Whether the first row of a delimited file names the columns. `None`: yes when a column is
    /// named by a header name, otherwise decided from the first rows.
    pub has_header: Option<bool>,
    /// Rows to skip after the header. `None`: 2 when they are Orange's type and flag rows
    /// (`.tab` files), otherwise 0.
    pub skip_after_header: Option<usize>,
    /// Read at most this many data rows.
    pub limit: Option<usize>,
    /// Replace invalid UTF-8 with U+FFFD instead of quarantining the row.
    pub lossy_utf8: bool,
    /// Quarantine texts longer than this many characters (after normalisation).
    pub max_text_chars: Option<usize>,
    /// A row longer than this many bytes is quarantined without being held in memory.
    pub max_record_bytes: usize,
    /// NFC, whitespace collapsed, control characters removed.
    pub normalize: bool,
    /// Remove HTML tags (`<br />`) and decode character references (`&amp;`).
    pub strip_html: bool,
    /// When set, a label outside this list is quarantined.
    pub labels: Option<Vec<String>>,
    /// Quarantine a row whose normalised text equals an earlier accepted row's (they are always
    /// counted; by default they are kept, and splits keep them together).
    pub drop_duplicates: bool,
    /// How far a `.gz`/`.bz2` file may expand before reading it fails (a decompression bomb).
    pub decompression: Decompression,
}

pub const DEFAULT_MAX_TEXT_CHARS: usize = 1_000_000;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 32 << 20;

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            text_col: "text".into(),
            label_col: Some("label".into()),
            id_col: None,
            format: None,
            has_header: None,
            skip_after_header: None,
            limit: None,
            lossy_utf8: false,
            max_text_chars: Some(DEFAULT_MAX_TEXT_CHARS),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            normalize: true,
            strip_html: false,
            labels: None,
            drop_duplicates: false,
            decompression: Decompression::default(),
        }
    }
}

/// What one file gave. Invariant: `rows_read == accepted + quarantined`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestStats {
    pub source: String,
    /// sha256 of the file as stored (before decompression).
    pub source_sha256: ContentHash,
    pub compression: Option<Compression>,
    /// The format used, given or sniffed.
    pub format: Format,
    pub has_header: bool,
    /// The header's column names (empty without a header).
    pub columns: Vec<String>,
    /// Rows skipped after the header (Orange type and flag rows).
    pub skipped_after_header: usize,
    pub rows_read: u64,
    pub accepted: u64,
    pub quarantined: u64,
    /// Empty lines: not rows, not counted in `rows_read`.
    pub blank_lines: u64,
    /// Bytes parsed (after decompression).
    pub bytes: u64,
    /// Accepted rows whose normalised text equals an earlier accepted row's.
    pub exact_duplicates: u64,
    /// Of those, the ones whose label differs from the earlier row's.
    pub conflicting_duplicates: u64,
    /// Rows whose invalid UTF-8 was replaced (only with `lossy_utf8`).
    pub repaired_utf8: u64,
    /// Accepted rows whose text normalisation changed (their raw text is kept beside it).
    pub normalised: u64,
}

/// Everything read from one file. Invariant: `stats.rows_read == records.len() + quarantined.len()`.
#[derive(Debug)]
pub struct Ingested {
    pub stats: IngestStats,
    pub records: Vec<Record>,
    pub quarantined: Vec<Quarantined>,
}

/// One data row's fate.
#[derive(Debug)]
pub enum Row {
    Accepted(Record),
    Quarantined(Quarantined),
}

/// Reads a labelled table into memory. Every data row becomes a record or a quarantined row.
pub fn read_table(path: &Path, opts: &ReadOptions) -> Result<Ingested, DataError> {
    let (mut records, mut quarantined) = (Vec::new(), Vec::new());
    let stats = ingest(path, opts, &mut |row| {
        match row {
            Row::Accepted(r) => records.push(r),
            Row::Quarantined(q) => quarantined.push(q),
        }
        Ok(())
    })?;
    Ok(Ingested { stats, records, quarantined })
}

/// Like [`read_table`], from bytes in memory; `name` stands for the file name (its extension
/// picks the format when `opts.format` is `None`). No decompression.
pub fn read_bytes(bytes: &[u8], name: &str, opts: &ReadOptions) -> Result<Ingested, DataError> {
    let (mut records, mut quarantined) = (Vec::new(), Vec::new());
    let mut stats = ingest_reader(bytes, name, opts, &mut |row| {
        match row {
            Row::Accepted(r) => records.push(r),
            Row::Quarantined(q) => quarantined.push(q),
        }
        Ok(())
    })?;
    stats.source_sha256 = ContentHash::of(bytes);
    Ok(Ingested { stats, records, quarantined })
}

/// Streams a file: every data row is passed to `on_row`, accepted or quarantined, in order.
/// Memory stays bounded by `max_record_bytes` plus the id and duplicate indexes (a few dozen
/// bytes per row). `.gz` and `.bz2` files are decompressed on the fly.
pub fn ingest(
    path: &Path,
    opts: &ReadOptions,
    on_row: &mut dyn FnMut(Row) -> io::Result<()>,
) -> Result<IngestStats, DataError> {
    let shown = path.display().to_string();
    let io_err = |source| DataError::Io { path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut raw = HashingReader::new(file);
    let (stream, compression) = input::open(path, &mut raw, opts.decompression).map_err(io_err)?;
    let name = input::inner_path(path).display().to_string();
    let mut stats = run(stream, &name, &shown, opts, on_row)?;
    stats.compression = compression;
    stats.source_sha256 = raw.finish().map_err(io_err)?;
    Ok(stats)
}

/// Streams from any reader (no decompression); `name` stands for the file name.
/// `source_sha256` is left as the hash of nothing: the reader's bytes are not hashed.
pub fn ingest_reader(
    input: impl Read,
    name: &str,
    opts: &ReadOptions,
    on_row: &mut dyn FnMut(Row) -> io::Result<()>,
) -> Result<IngestStats, DataError> {
    run(input, name, name, opts, on_row)
}

const SNIFF_BYTES: usize = 64 * 1024;

fn run(
    mut input: impl Read,
    name: &str,
    shown: &str,
    opts: &ReadOptions,
    on_row: &mut dyn FnMut(Row) -> io::Result<()>,
) -> Result<IngestStats, DataError> {
    let io_err = |source| DataError::Io { path: shown.to_owned(), source };
    let fmt_err = |message: String| DataError::Format { path: shown.to_owned(), message };
    let mut head = input::read_head(&mut input, SNIFF_BYTES).map_err(io_err)?;
    if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        return Err(fmt_err(
            "the file is UTF-16 (it starts with a UTF-16 byte order mark); convert it to UTF-8".into(),
        ));
    }
    let bom = if head.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
    let complete = head.len() < SNIFF_BYTES;
    let path = Path::new(name);
    let format = match opts.format {
        Some(f) => f,
        None => sniff::format(&head[bom..], complete, Format::from_path(path)).ok_or_else(|| {
            fmt_err(
                "cannot tell the format: the extension is not .csv, .tsv, .tab, .txt or .jsonl, and no delimiter \
                 splits the first rows consistently; pass --delimiter"
                    .into(),
            )
        })?,
    };
    let stem = input::inner_path(path).file_stem().and_then(|s| s.to_str()).unwrap_or("row").to_owned();
    let mut v = Validator {
        opts,
        stem,
        source: shown.to_owned(),
        stats: IngestStats {
            source: shown.to_owned(),
            source_sha256: ContentHash::of(b""),
            compression: None,
            format,
            has_header: false,
            columns: Vec::new(),
            skipped_after_header: 0,
            rows_read: 0,
            accepted: 0,
            quarantined: 0,
            blank_lines: 0,
            bytes: bom as u64,
            exact_duplicates: 0,
            conflicting_duplicates: 0,
            repaired_utf8: 0,
            normalised: 0,
        },
        ids: HashMap::new(),
        texts: HashMap::new(),
        label_ids: HashMap::new(),
        label_names: Vec::new(),
        on_row,
    };
    let sample = head.split_off(bom);
    let stream = Cursor::new(&sample[..]).chain(input);
    match format {
        Format::Delimited { delimiter } => read_delimited(stream, &sample, complete, delimiter, &mut v)?,
        Format::JsonLines => read_jsonl(stream, &mut v)?,
    }
    debug_assert_eq!(v.stats.rows_read, v.stats.accepted + v.stats.quarantined);
    Ok(v.stats)
}

/// Validation and normalisation, the same for every format.
struct Validator<'a> {
    opts: &'a ReadOptions,
    stem: String,
    source: String,
    stats: IngestStats,
    /// Hash of the id → label and line of accepted rows, when there is an id column.
    ids: HashMap<u64, Seen>,
    /// Hash of the normalised text → label and line of the first accepted row with it.
    texts: HashMap<u64, Seen>,
    label_ids: HashMap<String, u32>,
    label_names: Vec<String>,
    on_row: &'a mut dyn FnMut(Row) -> io::Result<()>,
}

/// A row's fields, as found; `None` when the row has no such column.
struct RowFields<'a> {
    text: Option<&'a [u8]>,
    label: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
}

/// [`RowFields`] as text.
struct Decoded<'a> {
    text: Option<Cow<'a, str>>,
    label: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
}

/// The key of the duplicate index: a 64-bit SipHash and the length. Two different texts of the
/// same length collide with probability 2^-64 per pair (about 3 in 10,000 for 10^8 rows).
/// The duplicate indexes' key: a 64-bit hash of the bytes and their length. Two different texts
/// (or ids) of one file share a key with a chance of about n²/2^65 (1 in 7 million for
/// 2.3 million rows), the price of 16 bytes a row: a gigabyte-sized file keeps its indexes in
/// a few hundred megabytes.
fn key(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

/// Distinct labels one file may have (the label id must fit [`Seen`]'s 24 bits).
const MAX_LABELS: usize = (1 << 24) - 2;

/// A row's label id and line packed into one word for the duplicate indexes: label id + 1 in
/// the top 24 bits (0: no label), the line in the low 40 (lines past 2^40 saturate).
#[derive(Clone, Copy, Debug)]
struct Seen(u64);

impl Seen {
    const LINE_BITS: u32 = 40;

    fn new(label: Option<u32>, line: u64) -> Self {
        let label = label.map_or(0, |l| u64::from(l) + 1);
        Self((label << Self::LINE_BITS) | line.min((1 << Self::LINE_BITS) - 1))
    }

    fn label(self) -> Option<u32> {
        let l = (self.0 >> Self::LINE_BITS) as u32;
        l.checked_sub(1)
    }

    fn line(self) -> u64 {
        self.0 & ((1 << Self::LINE_BITS) - 1)
    }
}

impl Validator<'_> {
    fn full(&self) -> bool {
        self.opts.limit.is_some_and(|l| self.stats.rows_read >= l as u64)
    }

    fn quarantine(&mut self, line: u64, reason: String, raw: &[u8]) -> io::Result<()> {
        self.stats.quarantined += 1;
        let (raw, raw_base64) = match std::str::from_utf8(raw) {
            Ok(s) => (s.to_owned(), None),
            Err(_) => {
                (String::from_utf8_lossy(raw).into_owned(), Some(base64::engine::general_purpose::STANDARD.encode(raw)))
            }
        };
        let q = Quarantined { source: self.source.clone(), line, reason, raw, raw_base64 };
        (self.on_row)(Row::Quarantined(q))
    }

    /// A row that cannot be read at all (wrong column count, invalid JSON, ...).
    fn reject(&mut self, line: u64, reason: String, raw: &[u8]) -> io::Result<()> {
        self.stats.rows_read += 1;
        self.quarantine(line, reason, raw)
    }

    fn label_id(&mut self, label: Option<&str>) -> Option<u32> {
        let label = label?;
        if let Some(&i) = self.label_ids.get(label) {
            return Some(i);
        }
        let i = self.label_names.len() as u32;
        self.label_names.push(label.to_owned());
        self.label_ids.insert(label.to_owned(), i);
        Some(i)
    }

    fn label_name(&self, id: Option<u32>) -> &str {
        id.and_then(|i| self.label_names.get(i as usize)).map_or("(none)", String::as_str)
    }

    fn row(&mut self, line: u64, raw: &[u8], f: RowFields<'_>) -> io::Result<()> {
        self.stats.rows_read += 1;
        match self.accept(line, f) {
            Ok(record) => (self.on_row)(Row::Accepted(record)),
            Err(reason) => self.quarantine(line, reason, raw),
        }
    }

    /// The checks of [`Validator::row`], in order: the record, or the reason to quarantine.
    fn accept(&mut self, line: u64, f: RowFields<'_>) -> Result<Record, String> {
        let Decoded { text, label, id } = self.decode(f)?;
        let Some(raw_text) = text else { return Err("missing text: the row has no text column".into()) };
        let text = self.clean_text(&raw_text)?;
        let (label, label_id) = self.check_label(label)?;
        let given_id = id.map(|i| i.trim().to_owned()).filter(|i| !i.is_empty());
        self.check_duplicates(line, &text, label_id, given_id.as_ref())?;
        let id = match given_id {
            Some(id) => {
                self.ids.entry(key(id.as_bytes())).or_insert(Seen::new(label_id, line));
                id
            }
            None => format!("{}:{line}", self.stem),
        };
        let changed = match &text {
            Cow::Borrowed(_) => false,
            Cow::Owned(t) => *t != *raw_text,
        };
        let text = text.into_owned();
        self.stats.normalised += u64::from(changed);
        self.stats.accepted += 1;
        Ok(Record { id, text, label, line, raw_text: changed.then(|| raw_text.into_owned()) })
    }

    /// The fields as text. Invalid UTF-8 is an error, or with `lossy_utf8` replaced (the row
    /// counted once as repaired).
    fn decode<'a>(&mut self, f: RowFields<'a>) -> Result<Decoded<'a>, String> {
        let lossy = self.opts.lossy_utf8;
        let mut repaired = false;
        let mut decode = |b: Option<&'a [u8]>, what: &str| -> Result<Option<Cow<'a, str>>, String> {
            let Some(b) = b else { return Ok(None) };
            match std::str::from_utf8(b) {
                Ok(s) => Ok(Some(Cow::Borrowed(s))),
                Err(_) if lossy => {
                    repaired = true;
                    Ok(Some(String::from_utf8_lossy(b)))
                }
                Err(e) => Err(format!("invalid UTF-8 in {what}: {e}")),
            }
        };
        let decoded =
            Decoded { text: decode(f.text, "text")?, label: decode(f.label, "label")?, id: decode(f.id, "id")? };
        if repaired {
            self.stats.repaired_utf8 += 1;
        }
        Ok(decoded)
    }

    /// The text as kept (normalised and HTML-stripped as the options say), which must not be
    /// empty or over `max_text_chars`.
    fn clean_text<'t>(&self, raw_text: &'t str) -> Result<Cow<'t, str>, String> {
        let text = if self.opts.normalize {
            normalize(raw_text, self.opts.strip_html)
        } else if self.opts.strip_html {
            Cow::Owned(crate::normalize::html_to_text(raw_text))
        } else {
            Cow::Borrowed(raw_text)
        };
        if text.trim().is_empty() {
            let why = if raw_text.trim().is_empty() {
                "the text is empty or only whitespace"
            } else {
                "nothing is left after normalisation (only markup, control characters or whitespace)"
            };
            return Err(format!("empty text: {why}"));
        }
        if let Some(max) = self.opts.max_text_chars {
            // A text of at most `max` bytes has at most `max` characters: most need no count.
            if text.len() > max && text.chars().take(max + 1).count() > max {
                return Err(format!(
                    "text too long: {} characters, over the limit of {max} (--max-text-chars)",
                    text.chars().count()
                ));
            }
        }
        Ok(text)
    }

    /// The trimmed label (required with a label column; one of `labels` when given) and its id.
    fn check_label(&mut self, label: Option<Cow<'_, str>>) -> Result<(Option<String>, Option<u32>), String> {
        let label = label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
        if self.opts.label_col.is_some() && label.is_none() {
            return Err("missing label: the label column is empty".into());
        }
        if let (Some(allowed), Some(l)) = (&self.opts.labels, &label)
            && !allowed.iter().any(|a| a == l)
        {
            return Err(format!("unknown label: {l:?} is not one of {}", allowed.join(", ")));
        }
        if label.as_ref().is_some_and(|l| !self.label_ids.contains_key(l.as_str()))
            && self.label_names.len() >= MAX_LABELS
        {
            return Err(format!("too many labels: the file has {MAX_LABELS} distinct labels already"));
        }
        let label_id = self.label_id(label.as_deref());
        Ok((label, label_id))
    }

    /// An id seen before must keep its label; a text seen before is counted as a duplicate (or,
    /// with `drop_duplicates`, refused), and a new text is remembered.
    fn check_duplicates(
        &mut self,
        line: u64,
        text: &str,
        label_id: Option<u32>,
        given_id: Option<&String>,
    ) -> Result<(), String> {
        if let Some(id) = given_id
            && let Some(&seen) = self.ids.get(&key(id.as_bytes()))
            && seen.label() != label_id
        {
            let (first_label, first_line) = (seen.label(), seen.line());
            return Err(format!(
                "duplicate id with a different label: id {id:?} is labelled {:?} on line {first_line}",
                self.label_name(first_label)
            ));
        }
        let text_key = key(text.as_bytes());
        if let Some(&seen) = self.texts.get(&text_key) {
            let (first_label, first_line) = (seen.label(), seen.line());
            let conflict = first_label != label_id;
            if self.opts.drop_duplicates {
                return Err(if conflict {
                    format!(
                        "conflicting duplicate: same normalised text as line {first_line}, labelled {:?} there",
                        self.label_name(first_label)
                    )
                } else {
                    format!("duplicate text: same normalised text and label as line {first_line}")
                });
            }
            self.stats.exact_duplicates += 1;
            self.stats.conflicting_duplicates += u64::from(conflict);
        } else {
            self.texts.insert(text_key, Seen::new(label_id, line));
        }
        Ok(())
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

fn wrap_io(path: &str) -> impl Fn(io::Error) -> DataError + '_ {
    |source| DataError::Io { path: path.to_owned(), source }
}

fn read_delimited(
    input: impl Read,
    sample: &[u8],
    complete: bool,
    delimiter: u8,
    v: &mut Validator<'_>,
) -> Result<(), DataError> {
    let opts = v.opts;
    let source = v.source.clone();
    let fmt_err = |message: String| DataError::Format { path: source.clone(), message };
    let io_err = |e: io::Error| DataError::Io { path: source.clone(), source: e };
    let rows = sniff::sample_rows(sample, complete, delimiter, 20);
    let named = |c: &str| c.parse::<usize>().is_err();
    let wants_names = named(&opts.text_col)
        || opts.label_col.as_deref().is_some_and(named)
        || opts.id_col.as_deref().is_some_and(named);
    let has_header = opts.has_header.unwrap_or_else(|| wants_names || sniff::looks_like_header(&rows));
    let skip = opts
        .skip_after_header
        .unwrap_or_else(|| if has_header && delimiter == b'\t' && sniff::orange_type_rows(&rows) { 2 } else { 0 });
    let mut p = Parser::new(input, delimiter, opts.max_record_bytes);
    let header: Option<Vec<String>> = if has_header {
        match p.next_row().map_err(io_err)? {
            None => {
                v.stats.blank_lines = p.blank_lines();
                v.stats.bytes += p.consumed();
                return Ok(());
            }
            Some(delimited::Row::Record { fields, .. }) => {
                Some(fields.iter().map(|f| String::from_utf8_lossy(f).trim().to_owned()).collect())
            }
            Some(delimited::Row::Unbalanced { line, .. }) => {
                return Err(fmt_err(format!("the header (line {line}) has a quote that never closes")));
            }
            Some(delimited::Row::TooLarge { len, .. }) => {
                return Err(fmt_err(format!("the header is {len} bytes long, over --max-record-bytes")));
            }
        }
    } else {
        None
    };
    let text_i = column_index(header.as_deref(), &opts.text_col, &source)?;
    let label_i = opts.label_col.as_deref().map(|c| column_index(header.as_deref(), c, &source)).transpose()?;
    let id_i = opts.id_col.as_deref().map(|c| column_index(header.as_deref(), c, &source)).transpose()?;
    v.stats.has_header = has_header;
    v.stats.columns = header.clone().unwrap_or_default();
    let mut width = header.as_ref().map(Vec::len);
    for _ in 0..skip {
        if p.next_row().map_err(io_err)?.is_none() {
            break;
        }
        v.stats.skipped_after_header += 1;
    }
    while !v.full() {
        let Some(row) = p.next_row().map_err(io_err)? else { break };
        match row {
            delimited::Row::Record { line, raw, fields } => {
                let w = *width.get_or_insert(fields.len());
                if fields.len() != w {
                    let reason = format!("wrong column count: expected {w}, found {}", fields.len());
                    v.reject(line, reason, raw).map_err(wrap_io(&v.source))?;
                    continue;
                }
                let f = RowFields {
                    text: fields.get(text_i),
                    label: label_i.and_then(|i| fields.get(i)),
                    id: id_i.and_then(|i| fields.get(i)),
                };
                v.row(line, raw, f).map_err(wrap_io(&v.source))?;
            }
            delimited::Row::Unbalanced { line, raw } => {
                let reason = "unbalanced quote: a quoted field opened on this line never closes (parsing resumed on \
                              the next line)"
                    .to_owned();
                v.reject(line, reason, raw).map_err(wrap_io(&v.source))?;
            }
            delimited::Row::TooLarge { line, prefix, len } => {
                let reason = format!(
                    "record too large: {len} bytes, over the limit of {} (--max-record-bytes); raw holds its first \
                     {} bytes",
                    opts.max_record_bytes,
                    prefix.len()
                );
                v.reject(line, reason, prefix).map_err(wrap_io(&v.source))?;
            }
        }
    }
    v.stats.blank_lines = p.blank_lines();
    v.stats.bytes += p.consumed();
    Ok(())
}

/// Reads lines of at most `max` bytes; a longer line is skipped and reported with its length.
struct Lines<R> {
    input: BufReader<R>,
    max: usize,
}

enum Line {
    Fits,
    TooLarge(u64),
}

impl<R: Read> Lines<R> {
    /// The next line (without its `\n`) into `out`, or `None` at the end. Returns the bytes consumed too.
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<Option<(Line, u64)>> {
        out.clear();
        let mut total = 0u64;
        let mut seen = false;
        loop {
            let avail = self.input.fill_buf()?;
            if avail.is_empty() {
                if !seen {
                    return Ok(None);
                }
                break;
            }
            seen = true;
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            total += take as u64;
            let room = (self.max + 1).saturating_sub(out.len());
            out.extend_from_slice(&avail[..take.min(room)]);
            self.input.consume(take + usize::from(done));
            if done {
                total += 1;
                break;
            }
        }
        let len = out.len() as u64;
        if out.len() > self.max {
            out.truncate(delimited::OVERSIZE_PREFIX.min(self.max));
            return Ok(Some((Line::TooLarge(len.max(total)), total)));
        }
        Ok(Some((Line::Fits, total)))
    }
}

fn read_jsonl(input: impl Read, v: &mut Validator<'_>) -> Result<(), DataError> {
    let opts = v.opts;
    let mut lines = Lines { input: BufReader::with_capacity(256 * 1024, input), max: opts.max_record_bytes };
    let mut buf = Vec::new();
    let mut line = 0u64;
    while !v.full() {
        let Some((kind, n)) = lines.next(&mut buf).map_err(wrap_io(&v.source))? else { break };
        line += 1;
        v.stats.bytes += n;
        if let Line::TooLarge(len) = kind {
            let reason = format!(
                "record too large: {len} bytes, over the limit of {} (--max-record-bytes); raw holds its first {} \
                 bytes",
                opts.max_record_bytes,
                buf.len()
            );
            v.reject(line, reason, &buf).map_err(wrap_io(&v.source))?;
            continue;
        }
        let bytes = buf.strip_suffix(b"\r").unwrap_or(&buf);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            v.stats.blank_lines += 1;
            continue; // blank lines between JSON objects are not rows
        }
        let repaired;
        let json: &[u8] = match std::str::from_utf8(bytes) {
            Ok(_) => bytes,
            Err(_) if opts.lossy_utf8 => {
                repaired = String::from_utf8_lossy(bytes).into_owned();
                repaired.as_bytes()
            }
            Err(e) => {
                v.reject(line, format!("invalid UTF-8: {e}"), bytes).map_err(wrap_io(&v.source))?;
                continue;
            }
        };
        let value: serde_json::Value = match serde_json::from_slice(json) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => {
                v.reject(line, "not an object: each line must be a JSON object".into(), bytes)
                    .map_err(wrap_io(&v.source))?;
                continue;
            }
            Err(e) => {
                v.reject(line, format!("invalid JSON: {e}"), bytes).map_err(wrap_io(&v.source))?;
                continue;
            }
        };
        let field = |col: Option<&str>| -> Result<Option<Cow<'_, str>>, String> {
            match col.and_then(|c| value.get(c)) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Ok(Some(Cow::Owned(v.to_string())))
                }
                Some(_) => Err(format!("wrong type: field {:?} must be a string or number", col.unwrap_or(""))),
            }
        };
        let fields = (|| {
            Ok::<_, String>((
                field(Some(&opts.text_col))?,
                field(opts.label_col.as_deref())?,
                field(opts.id_col.as_deref())?,
            ))
        })();
        match fields {
            Err(reason) => v.reject(line, reason, bytes),
            Ok((text, label, id)) => {
                let f = RowFields {
                    text: text.as_deref().map(str::as_bytes),
                    label: label.as_deref().map(str::as_bytes),
                    id: id.as_deref().map(str::as_bytes),
                };
                v.row(line, bytes, f)
            }
        }
        .map_err(wrap_io(&v.source))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_row_keeps_its_label_and_line_in_one_word() {
        for (label, line) in [(None, 0), (Some(0), 1), (Some(7), 123_456_789), (Some(MAX_LABELS as u32 - 1), 1 << 39)] {
            let s = Seen::new(label, line);
            assert_eq!((s.label(), s.line()), (label, line));
        }
        assert_eq!(Seen::new(Some(3), u64::MAX).line(), (1 << 40) - 1, "lines past 2^40 saturate");
        assert_eq!(Seen::new(Some(3), u64::MAX).label(), Some(3));
    }
}
