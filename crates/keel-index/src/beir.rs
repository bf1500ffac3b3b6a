//! BEIR-format evaluation sets: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl`
//! (`_id`, `text`) and a qrels TSV (`query-id`, `corpus-id`, `score`, with or without header).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::IndexError;
use crate::document::Document;
use crate::metrics::Judgements;

/// A JSON object read from one line, with its 1-based line number.
type Line = (usize, serde_json::Map<String, serde_json::Value>);

fn lines(path: &Path) -> Result<Vec<Line>, IndexError> {
    let s = std::fs::read_to_string(path).map_err(|e| IndexError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(o)) => out.push((i + 1, o)),
            _ => return Err(IndexError::format(path, format!("line {} is not a JSON object", i + 1))),
        }
    }
    Ok(out)
}

fn field(o: &serde_json::Map<String, serde_json::Value>, k: &str) -> String {
    match o.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The corpus as documents: id = `_id`, text = title and text separated by a blank line (text
/// alone without a title), metadata = string fields of `metadata` if present.
pub fn read_corpus(path: &Path) -> Result<Vec<Document>, IndexError> {
    let source = path.display().to_string();
    lines(path)?
        .into_iter()
        .map(|(n, o)| {
            let id = field(&o, "_id");
            if id.is_empty() {
                return Err(IndexError::format(path, format!("line {n} has no _id")));
            }
            let (title, body) = (field(&o, "title"), field(&o, "text"));
            let text = if title.is_empty() { body } else { format!("{title}\n\n{body}") };
            let metadata: BTreeMap<String, String> = match o.get("metadata") {
                Some(serde_json::Value::Object(m)) => {
                    m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect()
                }
                _ => BTreeMap::new(),
            };
            Ok(Document { id, source: source.clone(), text, metadata })
        })
        .collect()
}

/// `(query id, text)` in file order.
pub fn read_queries(path: &Path) -> Result<Vec<(String, String)>, IndexError> {
    Ok(lines(path)?.into_iter().map(|(_, o)| (field(&o, "_id"), field(&o, "text"))).collect())
}

/// Judgements by query id.
pub fn read_qrels(path: &Path) -> Result<HashMap<String, Judgements>, IndexError> {
    let s = std::fs::read_to_string(path).map_err(|e| IndexError::io(path, e))?;
    let mut out: HashMap<String, Judgements> = HashMap::new();
    for (i, line) in s.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if line.trim().is_empty() || (i == 0 && cols.first().is_some_and(|c| *c == "query-id")) {
            continue;
        }
        // BEIR's three columns, or TREC's four (query, iteration, doc, grade).
        let (q, d, g) = match cols.as_slice() {
            [q, d, g] => (q, d, g),
            [q, _, d, g] => (q, d, g),
            _ => return Err(IndexError::format(path, format!("line {} is not query-id, corpus-id, score", i + 1))),
        };
        let grade: i32 = g
            .trim()
            .parse()
            .map_err(|_| IndexError::format(path, format!("line {}: score {g:?} is not an integer", i + 1)))?;
        out.entry(q.to_string()).or_default().insert(d.to_string(), grade);
    }
    Ok(out)
}
