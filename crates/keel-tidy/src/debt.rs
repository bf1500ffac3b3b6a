//! The known debt: violations the tree still has, written down so they can only shrink.
//!
//! `crates/keel-tidy/known-violations.txt` lists, one per line, a rule, a file and how many
//! violations of that rule the file has (`size crates/keel-store/src/store.rs 1`); `#` starts a
//! comment. [`compare`] fails the tree when a (rule, file) has more violations than listed
//! (new debt) and when it has fewer (paid debt: lower the count or delete the line, so nobody
//! can add it back unnoticed). The list is meant to be empty; until it is, every entry is a
//! place someone has to fix, not a permission.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::Violation;

/// (rule, file) → how many violations.
pub type Counts = BTreeMap<(String, PathBuf), usize>;

/// Reads the list's text. A malformed line is an error naming it.
pub fn parse(text: &str) -> Result<Counts, String> {
    let mut out = Counts::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [rule, file, n] = parts.as_slice() else {
            return Err(format!("line {}: expected `RULE FILE COUNT`, got {line:?}", i + 1));
        };
        let n: usize = n.parse().map_err(|_| format!("line {}: {n:?} is not a count", i + 1))?;
        *out.entry(((*rule).to_owned(), PathBuf::from(file))).or_default() += n;
    }
    Ok(out)
}

/// How many violations each (rule, file) has.
pub fn count(found: &[Violation]) -> Counts {
    let mut out = Counts::new();
    for v in found {
        *out.entry((v.rule.to_owned(), v.file.clone())).or_default() += 1;
    }
    out
}

/// What differs between the violations found and the known ones: each line says what to do.
/// Empty when they agree.
pub fn compare(found: &[Violation], known: &Counts) -> Vec<String> {
    let now = count(found);
    let mut out = Vec::new();
    for ((rule, file), &n) in &now {
        let listed = known.get(&(rule.clone(), file.clone())).copied().unwrap_or(0);
        if n > listed {
            out.push(format!(
                "new: {} {rule} violation(s) in {} (listed: {listed}); fix them:",
                n - listed,
                file.display()
            ));
            for v in found.iter().filter(|v| v.rule == rule && &v.file == file) {
                out.push(format!("    {v}"));
            }
        }
    }
    for ((rule, file), &listed) in known {
        let n = now.get(&(rule.clone(), file.clone())).copied().unwrap_or(0);
        if n < listed {
            out.push(format!(
                "paid: {rule} in {} has {n} violation(s), the list says {listed}; lower the count (or delete the line) in crates/keel-tidy/known-violations.txt",
                file.display()
            ));
        }
    }
    out
}
