//! A streaming, bounded-memory parser for delimited text (CSV, TSV, ...).
//!
//! It differs from the `csv` crate where messy data needs it to:
//! - every row comes with its exact original bytes and the line it starts on;
//! - `\n`, `\r\n` and a lone `\r` all end a row, in any mix, and line numbers count each of them;
//! - a record never holds more than `max_record` bytes in memory: a longer one is reported as
//!   [`Row::TooLarge`] with a prefix of its bytes, and skipped without being buffered;
//! - a quoted field that never closes (before the end of the input, or within `max_record` bytes)
//!   does not swallow the rest of the file: the line where it opened is reported as
//!   [`Row::Unbalanced`], and parsing starts again on the next line.
//!
//! Quoting follows RFC 4180 with the usual leniency: a quote inside an unquoted field is kept as
//! is, and text after a closing quote is appended to the field (`"ab"c` reads as `abc`).

use std::io::{self, Read};

use memchr::memchr3;

/// How many bytes of an oversized record are kept for the quarantine file.
pub const OVERSIZE_PREFIX: usize = 64 * 1024;
const CHUNK: usize = 256 * 1024;
const MIN_READ: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// At the start of a field (after a delimiter, or at the start of a record).
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote seen inside a quoted field: an escaped quote (`""`) or the end of the quotes.
    QuoteInQuoted,
    /// A `\r` ended the record; a `\n` right after it belongs to the same line end.
    Cr,
}

/// One row, borrowed from the parser until the next call to [`Parser::next_row`].
#[derive(Debug)]
pub enum Row<'a> {
    Record {
        line: u64,
        raw: &'a [u8],
        fields: Fields<'a>,
    },
    /// A quoted field that spans lines has no matching closing quote (it reaches the end of the
    /// input or `max_record` bytes, or its closing quote is followed by more text). `raw` runs
    /// from the record's start to the end of the line where that quote opened; parsing resumes
    /// on the next line.
    Unbalanced {
        line: u64,
        raw: &'a [u8],
    },
    /// A record of `len` bytes, more than the limit: `prefix` holds its first bytes.
    TooLarge {
        line: u64,
        prefix: &'a [u8],
        len: u64,
    },
}

/// The decoded fields of a record.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    data: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Fields<'a> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

pub struct Parser<R> {
    input: R,
    buf: Vec<u8>,
    /// Start of the current record in `buf`.
    start: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Scan position in `buf` (between `start` and `end`).
    pos: usize,
    eof: bool,
    /// Bytes read from the input so far.
    filled: u64,
    delimiter: u8,
    max_record: usize,
    st: St,
    /// In a quoted field: the previous byte was a `\r` (so a `\n` now is the same line end).
    prev_cr: bool,
    /// Line breaks inside quoted fields of the current record.
    breaks: u64,
    /// `breaks` when the current quoted field opened.
    breaks_before_quote: u64,
    /// Offset from `start` just past the first line break inside the current quoted field.
    first_break: Option<usize>,
    /// 1-based line where the current record starts.
    line: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Skipping an oversized record: its prefix, and bytes dropped so far.
    oversize: Option<(Vec<u8>, u64)>,
    /// Work to do before scanning the next record: (bytes to drop, lines to add).
    advance: Option<(usize, u64)>,
    /// Bytes consumed in total (records, blank lines, BOM).
    consumed: u64,
    blank_lines: u64,
}

impl<R: Read> Parser<R> {
    pub fn new(input: R, delimiter: u8, max_record: usize) -> Self {
        Self {
            input,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pos: 0,
            eof: false,
            filled: 0,
            delimiter,
            max_record: max_record.max(1),
            st: St::FieldStart,
            prev_cr: false,
            breaks: 0,
            breaks_before_quote: 0,
            first_break: None,
            line: 1,
            data: Vec::new(),
            ends: Vec::new(),
            oversize: None,
            advance: None,
            consumed: 0,
            blank_lines: 0,
        }
    }

    /// Blank lines skipped so far (they are not rows).
    pub fn blank_lines(&self) -> u64 {
        self.blank_lines
    }

    fn apply_advance(&mut self) {
        if let Some((bytes, lines)) = self.advance.take() {
            self.start += bytes;
            self.consumed += bytes as u64;
            self.line += lines;
            self.pos = self.start;
            self.st = St::FieldStart;
            self.prev_cr = false;
            self.breaks = 0;
            self.first_break = None;
            self.data.clear();
            self.ends.clear();
            self.oversize = None;
        }
    }

    /// Bytes consumed so far: rows returned (and being returned), blank lines, a skipped BOM.
    pub fn consumed(&self) -> u64 {
        self.consumed + self.advance.map_or(0, |(n, _)| n as u64)
    }

    /// Reads more input, keeping the bytes from `start` on.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.pos -= self.start;
            self.start = 0;
        }
        // Start small (sniffing and tiny files), grow to CHUNK as input keeps coming, and beyond
        // only to hold a record up to `max_record` bytes.
        if self.buf.len() - self.end < MIN_READ || (self.buf.len() < CHUNK && self.filled >= self.buf.len() as u64) {
            let want = (self.buf.len() * 2).clamp(MIN_READ * 2, CHUNK.max(self.end * 2));
            let want = want.min(self.end + self.max_record + CHUNK).max(self.end + MIN_READ);
            self.buf.resize(want, 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    self.filled += n as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn end_field(&mut self) {
        self.ends.push(self.data.len());
    }

    /// Scans from `pos` until a record ends (its terminator consumed), more input is needed, or a
    /// quoted field that spans lines closes somewhere other than at the end of a field.
    ///
    /// A record's fate depends on its bytes only, not on how the input was chunked: while
    /// keeping a record, the scan never looks past `max_record` bytes from its start.
    fn scan(&mut self) -> Scan {
        let keep = self.oversize.is_none();
        let end = if keep { self.end.min(self.start + self.max_record) } else { self.end };
        loop {
            let done = match self.st {
                St::FieldStart => self.field_start(end),
                St::Unquoted => self.unquoted(end, keep),
                St::Quoted => self.quoted(end, keep),
                St::QuoteInQuoted => self.quote_in_quoted(end, keep),
                St::Cr => self.after_cr(end),
            };
            if let Some(scan) = done {
                return scan;
            }
        }
    }

    // The steps of [`Parser::scan`], one per state: each reads from `pos` (not past `end`),
    // moves to the next state, and returns `Some` when the scan stops there. `keep`: the
    // record's bytes are collected (it is not over `max_record`).

    /// At the start of a field: a quote opens a quoted field; a delimiter or line break ends an
    /// empty one.
    #[inline]
    fn field_start(&mut self, end: usize) -> Option<Scan> {
        let Some(&b) = self.buf[..end].get(self.pos) else { return Some(Scan::NeedMore) };
        if b == b'"' {
            self.pos += 1;
            self.st = St::Quoted;
            self.prev_cr = false;
            self.breaks_before_quote = self.breaks;
            self.first_break = None;
        } else if b == self.delimiter {
            self.pos += 1;
            self.end_field();
        } else if b == b'\n' {
            self.pos += 1;
            self.end_field();
            return Some(Scan::End);
        } else if b == b'\r' {
            self.pos += 1;
            self.end_field();
            self.st = St::Cr;
        } else {
            self.st = St::Unquoted;
        }
        None
    }

    /// Inside an unquoted field: up to the next delimiter or line break.
    #[inline]
    fn unquoted(&mut self, end: usize, keep: bool) -> Option<Scan> {
        let d = self.delimiter;
        let hay = &self.buf[self.pos..end];
        let Some(k) = memchr3(d, b'\n', b'\r', hay) else {
            if keep {
                self.data.extend_from_slice(hay);
            }
            self.pos = end;
            return Some(Scan::NeedMore);
        };
        if keep {
            self.data.extend_from_slice(&hay[..k]);
        }
        let b = hay[k];
        self.pos += k + 1;
        self.end_field();
        if b == d {
            self.st = St::FieldStart;
        } else if b == b'\n' {
            return Some(Scan::End);
        } else {
            self.st = St::Cr;
        }
        None
    }

    /// Inside a quoted field: up to the next quote, counting the line breaks it spans.
    #[inline]
    fn quoted(&mut self, end: usize, keep: bool) -> Option<Scan> {
        let q = b'"';
        let hay = &self.buf[self.pos..end];
        let Some(k) = memchr3(q, b'\n', b'\r', hay) else {
            if keep {
                self.data.extend_from_slice(hay);
            }
            if !hay.is_empty() {
                self.prev_cr = false;
            }
            self.pos = end;
            return Some(Scan::NeedMore);
        };
        if keep {
            self.data.extend_from_slice(&hay[..k]);
        }
        let b = hay[k];
        self.pos += k + 1;
        if k > 0 {
            self.prev_cr = false;
        }
        if b == q {
            self.st = St::QuoteInQuoted;
            return None;
        }
        if keep {
            self.data.push(b);
        }
        if b == b'\r' || !self.prev_cr {
            self.breaks += 1;
            if self.first_break.is_none() {
                self.first_break = Some(self.pos - self.start);
            }
        } else if self.breaks == self.breaks_before_quote + 1 {
            // `\r\n`: the first line break ends after the `\n`.
            self.first_break = Some(self.pos - self.start);
        }
        self.prev_cr = b == b'\r';
        None
    }

    /// After a quote inside a quoted field: a doubled quote, the field's end, or a quote that
    /// was not meant to span lines.
    #[inline]
    fn quote_in_quoted(&mut self, end: usize, keep: bool) -> Option<Scan> {
        let Some(&b) = self.buf[..end].get(self.pos) else { return Some(Scan::NeedMore) };
        if b == b'"' {
            self.pos += 1;
            if keep {
                self.data.push(b'"');
            }
            self.st = St::Quoted;
            self.prev_cr = false;
        } else if b == self.delimiter || b == b'\n' || b == b'\r' || self.breaks == self.breaks_before_quote {
            // The quotes ended; on one line, anything up to the delimiter is appended.
            self.st = St::Unquoted;
        } else if keep {
            // `"...<line break>..."x`: the quote that opened this field was not
            // meant to span lines.
            return Some(Scan::Malformed);
        } else {
            self.st = St::Unquoted;
        }
        None
    }

    /// After a `\r` that ended a record: a `\n` right after it belongs to the same line break.
    #[inline]
    fn after_cr(&mut self, end: usize) -> Option<Scan> {
        let Some(&b) = self.buf[..end].get(self.pos) else { return Some(Scan::NeedMore) };
        if b == b'\n' {
            self.pos += 1;
        }
        Some(Scan::End)
    }

    /// The next row, or `None` at the end of the input.
    pub fn next_row(&mut self) -> io::Result<Option<Row<'_>>> {
        Ok(match self.find_row()? {
            Found::End => None,
            Found::Unbalanced { line, len } => {
                Some(Row::Unbalanced { line, raw: &self.buf[self.start..self.start + len] })
            }
            Found::TooLarge { line, len } => {
                let prefix = self.oversize.as_ref().map_or(&[][..], |(p, _)| p.as_slice());
                Some(Row::TooLarge { line, prefix, len })
            }
            Found::Record { line } => Some(Row::Record {
                line,
                raw: &self.buf[self.start..self.pos],
                fields: Fields { data: &self.data, ends: &self.ends },
            }),
        })
    }

    fn find_row(&mut self) -> io::Result<Found> {
        self.apply_advance();
        loop {
            let scan = self.scan();
            if scan == Scan::Malformed {
                return Ok(self.unbalanced());
            }
            let done = scan == Scan::End;
            if !done {
                if self.oversize.is_none() && self.pos - self.start >= self.max_record {
                    if self.st == St::Quoted && self.first_break.is_some() {
                        return Ok(self.unbalanced());
                    }
                    // Too large: keep a prefix, then skip to the end of the record.
                    let n = (self.pos - self.start).min(OVERSIZE_PREFIX);
                    self.oversize = Some((self.buf[self.start..self.start + n].to_vec(), 0));
                    self.data.clear();
                    self.ends.clear();
                    continue;
                }
                if !self.eof {
                    if let Some((_, n)) = self.oversize.as_mut() {
                        // Skipping: drop what was scanned.
                        let dropped = self.pos - self.start;
                        *n += dropped as u64;
                        self.consumed += dropped as u64;
                        self.start = self.pos;
                        self.data.clear();
                        self.ends.clear();
                    }
                    self.fill()?;
                    continue;
                }
                // End of input.
                if self.pos == self.start && self.oversize.is_none() {
                    return Ok(Found::End);
                }
                if self.st == St::Quoted && self.oversize.is_none() {
                    return Ok(self.unbalanced());
                }
                if self.st != St::Cr {
                    self.end_field();
                }
            }
            // A record ended at `pos` (or at the end of the input without a line end).
            let len = self.pos - self.start;
            let line = self.line;
            let lines = self.breaks + u64::from(done || self.st == St::Cr);
            self.advance = Some((len, lines));
            if let Some((_, dropped)) = &mut self.oversize {
                // `apply_advance` ends the skipping on the next call.
                *dropped += len as u64;
                return Ok(Found::TooLarge { line, len: *dropped });
            }
            if matches!(self.buf.get(self.start), Some(b'\n' | b'\r')) && len > 0 {
                // A blank line is not a row.
                self.blank_lines += 1;
                self.apply_advance();
                continue;
            }
            return Ok(Found::Record { line });
        }
    }

    fn unbalanced(&mut self) -> Found {
        let len = self.first_break.unwrap_or(self.pos - self.start);
        let lines = if self.first_break.is_some() { self.breaks_before_quote + 1 } else { self.breaks };
        self.advance = Some((len, lines));
        Found::Unbalanced { line: self.line, len }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    NeedMore,
    End,
    Malformed,
}

enum Found {
    End,
    Record { line: u64 },
    Unbalanced { line: u64, len: usize },
    TooLarge { line: u64, len: u64 },
}
