//! Reading texts to embed.

use std::path::Path;

use crate::error::EmbedError;

/// Reads the texts in `path`.
///
/// JSONL if the first non-empty line is a JSON object: each non-empty line must be an object
/// with a string field `field` (default `text`); anything else is an error naming the line.
/// Otherwise plain text: one text per line (trailing `\r` stripped), empty lines included, so
/// output rows line up with input lines.
pub fn read_texts(path: &Path, field: Option<&str>) -> Result<Vec<String>, EmbedError> {
    let raw = std::fs::read_to_string(path).map_err(|e| EmbedError::io(path, e))?;
    let raw = raw.strip_prefix('\u{feff}').unwrap_or(&raw);
    let lines = || raw.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));

    let is_jsonl = lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .is_some_and(|v| v.is_object());
    if !is_jsonl {
        return Ok(lines().map(str::to_owned).collect());
    }

    let field = field.unwrap_or("text");
    let mut texts = Vec::new();
    for (i, line) in lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| EmbedError::Input { path: path.to_path_buf(), line: i + 1, message };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if !value.is_object() {
            return Err(bad(format!("expected a JSON object, found {}", json_kind(&value))));
        }
        match value.get(field) {
            Some(serde_json::Value::String(s)) => texts.push(s.clone()),
            Some(other) => {
                return Err(bad(format!("field {field:?} is not a string (found {})", json_kind(other))));
            }
            None => return Err(bad(format!("missing field {field:?}"))),
        }
    }
    Ok(texts)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
