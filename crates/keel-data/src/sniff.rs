//! Guessing what a file does not say: its delimiter, whether it has a header, and whether
//! Orange's type and flag rows follow the header. Works on the first bytes of the file.

use crate::delimited::{Parser, Row};
use crate::format::Format;

/// Delimiters tried, in order of preference on a tie.
const CANDIDATES: [u8; 4] = [b',', b'\t', b';', b'|'];

/// A parsed sample row: its fields, or `None` for a row the parser could not read.
pub type SampleRow = Option<Vec<Vec<u8>>>;

/// The first `n` rows of `sample` split on `delimiter`; the last row is dropped when the sample
/// is not the whole file (it may be cut short).
pub fn sample_rows(sample: &[u8], complete: bool, delimiter: u8, n: usize) -> Vec<SampleRow> {
    let mut p = Parser::new(sample, delimiter, sample.len() + 1);
    let mut rows = Vec::new();
    // One more than needed, to know whether the last one was cut by the end of the sample.
    while rows.len() <= n {
        match p.next_row() {
            Ok(Some(Row::Record { fields, .. })) => rows.push(Some(fields.iter().map(<[u8]>::to_vec).collect())),
            Ok(Some(_)) => rows.push(None),
            Ok(None) | Err(_) => break,
        }
    }
    let reached_end = rows.len() <= n;
    if !complete && reached_end {
        rows.pop();
    }
    rows.truncate(n);
    rows
}

/// How well `delimiter` splits the sample: (share of rows with the most common field count,
/// that count). `None` when no row splits into two fields or more.
fn consistency(sample: &[u8], complete: bool, delimiter: u8) -> Option<(f64, usize)> {
    let rows = sample_rows(sample, complete, delimiter, 50);
    let counts: Vec<usize> = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len)).collect();
    let mut best = (0usize, 0usize);
    for &c in &counts {
        let n = counts.iter().filter(|&&x| x == c).count();
        if (n, c) > best {
            best = (n, c);
        }
    }
    let (n, width) = best;
    (width >= 2).then(|| (n as f64 / counts.len() as f64, width))
}

/// The format of a file from its first bytes, preferring what its extension says.
pub fn format(sample: &[u8], complete: bool, from_extension: Option<Format>) -> Option<Format> {
    let preferred = match from_extension {
        Some(Format::JsonLines) => return Some(Format::JsonLines),
        Some(Format::Delimited { delimiter }) => Some(delimiter),
        None => None,
    };
    if preferred.is_none() && first_line_is_json_object(sample) {
        return Some(Format::JsonLines);
    }
    if let Some(d) = preferred
        && consistency(sample, complete, d).is_some_and(|(share, _)| share >= 0.9)
    {
        return Some(Format::Delimited { delimiter: d });
    }
    let mut best: Option<(f64, usize, u8)> = None;
    for d in CANDIDATES {
        if let Some((share, width)) = consistency(sample, complete, d)
            && share >= 0.9
            && best.is_none_or(|(s, w, _)| (share, width) > (s, w))
        {
            best = Some((share, width, d));
        }
    }
    if let Some((_, _, d)) = best {
        return Some(Format::Delimited { delimiter: d });
    }
    if let Some(d) = preferred {
        return Some(Format::Delimited { delimiter: d });
    }
    None
}

fn first_line_is_json_object(sample: &[u8]) -> bool {
    let line = sample.split(|&b| b == b'\n').find(|l| !l.iter().all(u8::is_ascii_whitespace)).unwrap_or(&[]);
    matches!(serde_json::from_slice::<serde_json::Value>(line), Ok(serde_json::Value::Object(_)))
}

fn is_number(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && s.parse::<f64>().is_ok()
}

/// Whether the first sample row names the columns: its cells are distinct, short, non-empty and
/// not numbers, and some column's data differs from them in kind (numbers) or size (long text).
pub fn looks_like_header(rows: &[SampleRow]) -> bool {
    let Some(Some(first)) = rows.first() else { return false };
    let Ok(names) = first.iter().map(|f| std::str::from_utf8(f).map(str::trim)).collect::<Result<Vec<_>, _>>() else {
        return false;
    };
    let plausible = names.iter().all(|n| !n.is_empty() && n.len() <= 64 && !is_number(n));
    let distinct = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
    if !plausible || !distinct {
        return false;
    }
    let data: Vec<&Vec<Vec<u8>>> = rows[1..].iter().flatten().filter(|r| r.len() == names.len()).collect();
    if data.is_empty() {
        return false;
    }
    (0..names.len()).any(|j| {
        let values: Vec<&str> = data.iter().map(|r| std::str::from_utf8(&r[j]).unwrap_or("")).collect();
        let numeric = values.iter().filter(|v| is_number(v)).count();
        let min_len = values.iter().map(|v| v.chars().count()).min().unwrap_or(0);
        numeric * 2 > values.len() || min_len > 2 * names[j].chars().count() + 16
    })
}

/// Whether rows 2 and 3 are Orange's type row (`d`, `string`, `continuous`, ...) and flag row
/// (`class`, `meta`, ...).
pub fn orange_type_rows(rows: &[SampleRow]) -> bool {
    const TYPES: &[&str] = &["d", "discrete", "c", "continuous", "s", "string", "t", "time", "text"];
    const FLAGS: &[&str] = &["class", "c", "meta", "m", "ignore", "i", "weight", "w"];
    let (Some(Some(types)), Some(Some(flags))) = (rows.get(1), rows.get(2)) else { return false };
    let cells = |row: &Vec<Vec<u8>>| -> Vec<String> {
        row.iter().map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase()).collect()
    };
    let (types, flags) = (cells(types), cells(flags));
    let types_ok = types.iter().all(|t| t.is_empty() || TYPES.contains(&t.as_str()));
    let flags_ok = flags.iter().all(|f| f.split_whitespace().all(|tok| FLAGS.contains(&tok) || tok.contains('=')));
    types_ok && flags_ok && types.iter().any(|t| !t.is_empty())
}
