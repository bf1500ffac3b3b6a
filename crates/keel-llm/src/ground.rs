//! Is a generated answer supported by the chunks it cites? Every answer sentence is checked.
//!
//! The rule. The answer (its `[n]` markers removed) is cut into sentences as
//! [`crate::extract::sentences`] cuts documents. For each sentence: `similarity` is the
//! highest cosine, with the encoder, between it and any sentence of the cited chunks;
//! `support` is the share of its content words (stop words and the question's own words left
//! out, a plural `s` folded) that occur in the cited chunks (1 when nothing is left, as for a
//! sentence that only restates the question). A sentence is supported when
//! `similarity >= MIN_SIMILARITY` and `support >= MIN_SUPPORT`; without an encoder, on support
//! alone. The answer's `score` is the share of its sentences that are supported, and it is
//! grounded only when every sentence is (an answer with no sentence, or no cited chunk, is
//! not). The thresholds were chosen on the labelled sample in `tests/data/grounding.jsonl`
//! (ARCHITECTURE.md gives the figures).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::cite::strip_markers;
use crate::extract::{Embedder, content_words, cosine, sentences};
use crate::prompt::Passage;

/// Least cosine between an answer sentence and its closest sentence in the cited chunks.
pub const MIN_SIMILARITY: f64 = 0.35;
/// Least share of an answer sentence's content words found in the cited chunks.
pub const MIN_SUPPORT: f64 = 0.5;

/// One answer sentence, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceCheck {
    pub text: String,
    /// Highest cosine with a sentence of the cited chunks (None without an encoder).
    pub similarity: Option<f64>,
    /// Share of its content words found in the cited chunks.
    pub support: f64,
    /// Its content words the cited chunks do not contain.
    pub missing: Vec<String>,
    pub supported: bool,
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grounding {
    /// Share of answer sentences that are supported (0 for an empty answer).
    pub score: f64,
    /// Every sentence supported (and at least one sentence and one cited chunk).
    pub grounded: bool,
    pub sentences: Vec<SentenceCheck>,
    /// Chunk ids the answer was checked against.
    pub against: Vec<String>,
    pub used_encoder: bool,
    pub min_similarity: f64,
    pub min_support: f64,
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks `answer` to `question` against the chunks it cites; see the module docs.
pub fn check(question: &str, answer: &str, cited: &[&Passage], embed: Option<&Embedder>) -> Result<Grounding, String> {
    let text = strip_markers(answer);
    let claims: Vec<String> = sentences(&text)
        .iter()
        .map(|s| flat(&text[s.start..s.end]))
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect();
    let evidence: Vec<String> = cited
        .iter()
        .flat_map(|p| sentences(&p.text).into_iter().map(|s| flat(&p.text[s.start..s.end])).collect::<Vec<_>>())
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect();
    let known: HashSet<String> = cited.iter().flat_map(|p| content_words(&p.text)).collect();
    let asked: HashSet<String> = content_words(question).into_iter().collect();
    let similarity: Option<Vec<f64>> = match embed {
        Some(embed) if !claims.is_empty() && !evidence.is_empty() => {
            let texts: Vec<&str> = claims.iter().chain(&evidence).map(String::as_str).collect();
            let v = embed(&texts)?;
            if v.len() != texts.len() {
                return Err(format!("the encoder returned {} vectors for {} texts", v.len(), texts.len()));
            }
            let (c, e) = v.split_at(claims.len());
            Some(c.iter().map(|a| e.iter().map(|b| cosine(a, b)).fold(f64::MIN, f64::max)).collect())
        }
        _ => None,
    };
    let checks: Vec<SentenceCheck> = claims
        .iter()
        .enumerate()
        .map(|(i, claim)| {
            let mut own: Vec<String> = content_words(claim).into_iter().filter(|w| !asked.contains(w)).collect();
            own.dedup();
            let own: Vec<String> = own.into_iter().collect::<HashSet<_>>().into_iter().collect();
            let mut missing: Vec<String> = own.iter().filter(|w| !known.contains(*w)).cloned().collect();
            missing.sort();
            let support = if own.is_empty() { 1.0 } else { 1.0 - missing.len() as f64 / own.len() as f64 };
            let sim = similarity.as_ref().map(|s| s[i]);
            let supported = support >= MIN_SUPPORT && sim.is_none_or(|s| s >= MIN_SIMILARITY) && !cited.is_empty();
            SentenceCheck { text: claim.clone(), similarity: sim, support, missing, supported }
        })
        .collect();
    let ok = checks.iter().filter(|c| c.supported).count();
    let score = if checks.is_empty() { 0.0 } else { ok as f64 / checks.len() as f64 };
    Ok(Grounding {
        score,
        grounded: !checks.is_empty() && ok == checks.len(),
        sentences: checks,
        against: cited.iter().map(|p| p.chunk_id.clone()).collect(),
        used_encoder: similarity.is_some(),
        min_similarity: MIN_SIMILARITY,
        min_support: MIN_SUPPORT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> Passage {
        Passage {
            chunk_id: "readme:0".into(),
            doc_id: "readme".into(),
            source: "README.md".into(),
            start: 0,
            end: text.chars().count(),
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn word_support_alone_tells_a_copied_sentence_from_an_invented_one() {
        let p = passage(
            "Every command takes `--json` and `--home DIR` to choose the project store; \
             `KEEL_DATABASE_URL=postgres://...` keeps the records in PostgreSQL instead of SQLite.",
        );
        let q = "How do I keep the records in PostgreSQL instead of SQLite?";
        let good = check(q, "Set `KEEL_DATABASE_URL=postgres://...` [1].", &[&p], None).unwrap();
        assert!(good.grounded && good.score == 1.0, "{good:?}");
        let bad = check(
            q,
            "Set KEEL_DATABASE_URL. You can use `kube-config -vse_key=keel.env` to set a custom environment variable.",
            &[&p],
            None,
        )
        .unwrap();
        assert!(!bad.grounded, "{bad:?}");
        assert_eq!(bad.score, 0.5);
        assert!(bad.sentences[1].missing.contains(&"kube".to_owned()));
        // Nothing cited: nothing supports the answer.
        assert!(!check(q, "Set KEEL_DATABASE_URL.", &[], None).unwrap().grounded);
    }
}
