//! Which sources an answer draws on.
//!
//! A 135M-parameter model's own `[n]` markers are unreliable (it cites `[1]` by habit, or
//! numbers that were never given), so Keel does not trust them. The rule: the answer is split
//! into lowercase words (letters and digits); words of the question and common stop words are
//! removed, since they match every source; each source in the prompt scores the number of
//! distinct remaining answer words it contains plus twice the number of distinct answer word
//! pairs (adjacent words) it contains. Sources scoring at least half the best score (and at
//! least 1) are cited, best first, at most three; ties go to the better-ranked source. Markers
//! the model did write are reported beside each citation (`marked`), not used to choose.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::prompt::Passage;

/// A source the answer is attributed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// Its number in the prompt (`[n]`).
    pub n: usize,
    pub chunk_id: String,
    pub doc_id: String,
    pub source: String,
    pub start: usize,
    pub end: usize,
    /// Overlap score (see the module docs).
    pub overlap: usize,
    /// The model wrote `[n]` in its answer.
    pub marked: bool,
}

impl Citation {
    /// Passage `p`, numbered `n` in the prompt, cited with this overlap.
    pub fn of(n: usize, p: &Passage, overlap: usize, marked: bool) -> Self {
        Self {
            n,
            chunk_id: p.chunk_id.clone(),
            doc_id: p.doc_id.clone(),
            source: p.source.clone(),
            start: p.start,
            end: p.end,
            overlap,
            marked,
        }
    }
}

const STOP: &[&str] = &[
    "the",
    "a",
    "an",
    "and",
    "or",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "by",
    "with",
    "from",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "as",
    "not",
    "no",
    "but",
    "if",
    "so",
    "than",
    "then",
    "there",
    "their",
    "they",
    "he",
    "she",
    "his",
    "her",
    "we",
    "you",
    "i",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "which",
    "who",
    "what",
    "when",
    "where",
    "why",
    "how",
    "said",
    "says",
    "will",
    "would",
    "can",
    "could",
    "also",
    "about",
    "into",
    "after",
    "before",
    "source",
    "sources",
    "answer",
    "question",
    "according",
];

pub(crate) fn is_stop(w: &str) -> bool {
    STOP.contains(&w)
}

pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// `[n]` markers in the answer, in order of first appearance.
pub fn markers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        for part in rest[..close].split(',') {
            if let Ok(n) = part.trim().parse::<usize>()
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
        rest = &rest[close..];
    }
    out
}

/// The answer without its `[n]` markers (their digits are not content).
pub(crate) fn strip_markers(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if after[..close].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') => {
                out.push(' ');
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Citations for `answer` given the prompt's sources (`sources[0]` is `[1]`).
pub fn cite(question: &str, answer: &str, sources: &[&Passage]) -> Vec<Citation> {
    let asked: HashSet<String> = words(question).into_iter().collect();
    let keep = |w: &String| !asked.contains(w) && !STOP.contains(&w.as_str());
    let answer_words = words(&strip_markers(answer));
    let content: HashSet<&String> = answer_words.iter().filter(|w| keep(w)).collect();
    let pairs: HashSet<(&String, &String)> =
        answer_words.windows(2).filter(|p| keep(&p[0]) || keep(&p[1])).map(|p| (&p[0], &p[1])).collect();
    let marked = markers(answer);
    let mut scored: Vec<(usize, usize)> = sources
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let w = words(&p.text);
            let set: HashSet<&String> = w.iter().collect();
            let pair_set: HashSet<(&String, &String)> = w.windows(2).map(|x| (&x[0], &x[1])).collect();
            let score = content.iter().filter(|x| set.contains(*x)).count()
                + 2 * pairs.iter().filter(|x| pair_set.contains(*x)).count();
            (i, score)
        })
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let best = scored.first().map_or(0, |s| s.1);
    scored
        .into_iter()
        .filter(|&(_, s)| s >= 1 && 2 * s >= best)
        .take(3)
        .map(|(i, overlap)| Citation::of(i + 1, sources[i], overlap, marked.contains(&(i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str, text: &str) -> Passage {
        Passage {
            chunk_id: id.into(),
            doc_id: id.into(),
            source: "s".into(),
            start: 0,
            end: text.len(),
            text: text.into(),
            score: 0.0,
        }
    }

    #[test]
    fn overlap_picks_the_source_the_answer_copies_not_the_marker() {
        let a = passage("a", "The bridge over the Rhine was opened in 1932 by the mayor of Cologne.");
        let b = passage("b", "The new stadium in Munich seats 75,000 people and opened in 2005.");
        let q = "When was the stadium opened?";
        // Marker says [1] but the words come from [2].
        let got = cite(q, "It opened in 2005 and seats 75,000 people [1].", &[&a, &b]);
        assert_eq!(got[0].doc_id, "b");
        assert!(!got[0].marked);
        assert!(got.iter().all(|c| c.doc_id != "a" || c.overlap * 2 >= got[0].overlap));
        assert_eq!(markers("x [2] y [1, 3] [2] [z]"), vec![2, 1, 3]);
        // Only question words in the answer: nothing to attribute.
        assert!(cite(q, "When was the stadium opened?", &[&a, &b]).is_empty());
    }
}
