//! Extractive answers: the sentences of the retrieved chunks that best answer the question,
//! in document order, each cited. No generation, so it answers in a fraction of a second (the
//! encoder reading 8 sentences is most of it) and every word shown is a word of the documents.
//!
//! The rule. The top [`ExtractOptions::passages`] chunks are cut into sentences
//! ([`sentences`]: blank lines, Markdown headings, list items and table rows end a unit;
//! inside one, `.`, `?` or `!` followed by white space ends a sentence); headings, code fences
//! and units of fewer than four words are skipped, so is a piece of a sentence the chunk's
//! boundary cut (see `cut`), and a sentence repeated by overlapping
//! chunks is kept once (from the better-ranked chunk). Each sentence scores
//! `SIMILARITY_WEIGHT * cosine(question, sentence)` with the encoder plus
//! `(1 - SIMILARITY_WEIGHT) * overlap`, where overlap is BM25's idf-weighted share of the
//! question's content words (stop words removed, a plural `s` folded) the sentence contains,
//! idf counted over the sentences of those chunks; without an encoder, overlap alone (with one,
//! only the [`MAX_EMBEDDED`] candidates of highest overlap are embedded and scored). The best
//! sentence is kept, and the next best while they score at least [`KEEP_SHARE`] of it, at most
//! [`ExtractOptions::sentences`]; they are shown in document order (documents in retrieval
//! order, sentences by position), each followed by its source's `[n]`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cite::{Citation, is_stop, words};
use crate::prompt::Passage;

/// Embeds texts with the encoder the caller holds (one unit vector per text, in order).
pub type Embedder = Arc<dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>, String> + Send + Sync>;

/// Weight of the encoder's similarity against term overlap in a sentence's score.
pub const SIMILARITY_WEIGHT: f64 = 0.5;
/// Most sentences the encoder reads per question: the candidates with the highest overlap.
pub const MAX_EMBEDDED: usize = 8;
/// A sentence is kept while it scores at least this share of the best sentence.
pub const KEEP_SHARE: f64 = 0.75;

/// How much of the retrieved text an extractive answer reads and shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExtractOptions {
    /// Best-ranked chunks whose sentences are candidates.
    pub passages: usize,
    /// Most sentences in the answer.
    pub sentences: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self { passages: 3, sentences: 3 }
    }
}

/// One sentence of the extractive answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    pub text: String,
    /// Its source's number (`[n]`, retrieval order).
    pub n: usize,
    pub chunk_id: String,
    pub doc_id: String,
    /// Character offsets in the document.
    pub start: usize,
    pub end: usize,
    /// Cosine with the question (None without an encoder).
    pub similarity: Option<f64>,
    /// idf-weighted share of the question's content words it contains.
    pub overlap: f64,
    pub score: f64,
}

/// An extractive answer: the sentences, the text shown and its citations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    pub answer: String,
    pub sentences: Vec<Extracted>,
    pub citations: Vec<Citation>,
    /// Sentences that were candidates.
    pub candidates: usize,
    /// Whether the encoder's similarity entered the scores.
    pub used_encoder: bool,
    /// None of the question's content words occur in the sentences shown: the documents found
    /// may not answer it (the reply says so).
    pub weak: bool,
}

/// A sentence's byte range in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

fn starts_unit(line: &str) -> bool {
    let t = line.trim_start();
    let numbered = t.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    t.starts_with('#')
        || t.starts_with("- ")
        || t.starts_with("* ")
        || t.starts_with('|')
        || t.starts_with("```")
        || numbered
}

/// Units of `text`: paragraphs, headings, list items and table rows (byte ranges).
fn units(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        if let Some(s) = start
            && (blank || starts_unit(line))
        {
            out.push(Span { start: s, end: pos });
            start = None;
        }
        if !blank && start.is_none() {
            start = Some(pos);
        }
        if line.trim_start().starts_with('#') || line.trim_start().starts_with("```") {
            // A heading or a fence is a unit of its own line.
            if let Some(s) = start.take() {
                out.push(Span { start: s, end: pos + line.len() });
            }
        }
        pos += line.len();
    }
    if let Some(s) = start {
        out.push(Span { start: s, end: text.len() });
    }
    out
}

/// Sentences of `text` (byte ranges, trimmed); see the module docs for the rule.
pub fn sentences(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for u in units(text) {
        let unit = &text[u.start..u.end];
        let mut begin = 0;
        let chars: Vec<(usize, char)> = unit.char_indices().collect();
        for (i, &(at, c)) in chars.iter().enumerate() {
            let next_space = chars.get(i + 1).is_some_and(|&(_, n)| n.is_whitespace());
            let after_dot = i > 0 && chars[i - 1].1 == '.';
            if matches!(c, '.' | '?' | '!') && next_space && !(c == '.' && after_dot) {
                push_trimmed(&mut out, unit, u.start, begin, at + 1);
                begin = at + 1;
            }
        }
        push_trimmed(&mut out, unit, u.start, begin, unit.len());
    }
    out
}

fn push_trimmed(out: &mut Vec<Span>, unit: &str, base: usize, from: usize, to: usize) {
    let piece = &unit[from..to];
    let lead = piece.len() - piece.trim_start().len();
    let trail = piece.len() - piece.trim_end().len();
    if lead + trail < piece.len() {
        out.push(Span { start: base + from + lead, end: base + to - trail });
    }
}

/// Content words: lower-case words without stop words, a plural `s` folded.
pub fn content_words(text: &str) -> Vec<String> {
    words(text).into_iter().filter(|w| !is_stop(w)).map(|w| fold(&w)).collect()
}

pub(crate) fn fold(w: &str) -> String {
    match w.strip_suffix('s') {
        Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
        _ => w.to_owned(),
    }
}

/// Sentence text with its line breaks and list or table markers flattened.
fn clean(s: &str) -> String {
    let s = s.trim_start_matches(['-', '*', '|', ' ']).trim_end_matches(['|', ' ']);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Candidate {
    passage: usize,
    span: Span,
    text: String,
    words: HashSet<String>,
}

fn candidates(passages: &[Passage], opts: ExtractOptions) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in passages.iter().take(opts.passages).enumerate() {
        let spans = sentences(&p.text);
        for (j, &span) in spans.iter().enumerate() {
            let raw = &p.text[span.start..span.end];
            let text = clean(raw);
            let heading = raw.trim_start().starts_with('#') || raw.trim_start().starts_with("```");
            if heading
                || cut(p, raw, j == 0, j + 1 == spans.len())
                || words(&text).len() < 4
                || !seen.insert(text.to_lowercase())
            {
                continue;
            }
            let words = content_words(&text).into_iter().collect();
            out.push(Candidate { passage: i, span, text, words });
        }
    }
    out
}

/// A piece of a sentence the chunk boundary cut: the chunk's first, starting in lower case in
/// a chunk that does not start the document, or its last, a paragraph line without a closing
/// mark where the chunk does not end at a line break.
fn cut(p: &Passage, raw: &str, first: bool, last: bool) -> bool {
    let lower_start = raw.chars().next().is_some_and(char::is_lowercase);
    let list = raw.starts_with(['-', '*', '|']);
    let closed = raw.trim_end().ends_with(['.', '?', '!', ':', ';', '`', ')']);
    (first && p.start > 0 && lower_start) || (last && !list && !closed && !p.text.ends_with('\n'))
}

/// idf-weighted share of `query` terms found in each candidate (BM25's idf over candidates).
fn overlaps(query: &HashSet<String>, cands: &[Candidate]) -> Vec<f64> {
    let n = cands.len() as f64;
    let idf: HashMap<&String, f64> = query
        .iter()
        .map(|t| {
            let df = cands.iter().filter(|c| c.words.contains(t)).count() as f64;
            (t, (1.0 + (n - df + 0.5) / (df + 0.5)).ln())
        })
        .collect();
    let total: f64 = idf.values().sum();
    cands
        .iter()
        .map(|c| {
            if total <= 0.0 {
                return 0.0;
            }
            idf.iter().filter(|(t, _)| c.words.contains(**t)).map(|(_, w)| w).sum::<f64>() / total
        })
        .collect()
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { f64::from(dot / (na * nb)) }
}

/// Character offset of byte `at` in `text`.
fn char_offset(text: &str, at: usize) -> usize {
    text[..at].chars().count()
}

/// The extractive answer to `question` from `passages` (best first); see the module docs.
/// With `embed`, the encoder's similarity enters the score; its failure is returned.
pub fn extract(
    question: &str,
    passages: &[Passage],
    embed: Option<&Embedder>,
    opts: ExtractOptions,
) -> Result<Extraction, String> {
    let mut cands = candidates(passages, opts);
    let total = cands.len();
    let query: HashSet<String> = content_words(question).into_iter().collect();
    let mut overlap = overlaps(&query, &cands);
    if embed.is_some() && cands.len() > MAX_EMBEDDED {
        // The encoder reads only the sentences with the most question words (kept in order).
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|&a, &b| overlap[b].total_cmp(&overlap[a]).then(a.cmp(&b)));
        let mut keep: Vec<usize> = order.into_iter().take(MAX_EMBEDDED).collect();
        keep.sort_unstable();
        overlap = keep.iter().map(|&i| overlap[i]).collect();
        let mut all: Vec<Option<Candidate>> = cands.into_iter().map(Some).collect();
        cands = keep.iter().filter_map(|&i| all[i].take()).collect();
    }
    let similarity: Option<Vec<f64>> = match embed {
        Some(embed) if !cands.is_empty() => {
            let mut texts: Vec<&str> = vec![question];
            texts.extend(cands.iter().map(|c| c.text.as_str()));
            let v = embed(&texts)?;
            if v.len() != texts.len() {
                return Err(format!("the encoder returned {} vectors for {} texts", v.len(), texts.len()));
            }
            Some(v[1..].iter().map(|s| cosine(&v[0], s)).collect())
        }
        _ => None,
    };
    let score = |i: usize| match &similarity {
        Some(sim) => SIMILARITY_WEIGHT * sim[i] + (1.0 - SIMILARITY_WEIGHT) * overlap[i],
        None => overlap[i],
    };
    let mut ranked: Vec<usize> = (0..cands.len()).collect();
    ranked.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
    let best = ranked.first().map_or(0.0, |&i| score(i));
    let mut kept: Vec<usize> =
        ranked.into_iter().take(opts.sentences.max(1)).filter(|&i| score(i) >= KEEP_SHARE * best).collect();
    // Document order: documents in retrieval order of first appearance, then position.
    let doc_rank = |i: usize| {
        let doc = &passages[cands[i].passage].doc_id;
        passages.iter().position(|p| &p.doc_id == doc).unwrap_or(usize::MAX)
    };
    // Character offset in the document.
    let position = |i: usize| {
        passages[cands[i].passage].start + char_offset(&passages[cands[i].passage].text, cands[i].span.start)
    };
    kept.sort_by_key(|&i| (doc_rank(i), position(i)));
    let sentences: Vec<Extracted> = kept
        .iter()
        .map(|&i| {
            let (c, p) = (&cands[i], &passages[cands[i].passage]);
            let start = position(i);
            Extracted {
                text: c.text.clone(),
                n: c.passage + 1,
                chunk_id: p.chunk_id.clone(),
                doc_id: p.doc_id.clone(),
                start,
                end: start + p.text[c.span.start..c.span.end].chars().count(),
                similarity: similarity.as_ref().map(|s| s[i]),
                overlap: overlap[i],
                score: score(i),
            }
        })
        .collect();
    let answer = sentences.iter().map(|s| format!("{} [{}]", s.text, s.n)).collect::<Vec<_>>().join(" ");
    Ok(Extraction {
        answer,
        citations: citations(&sentences, passages),
        candidates: total,
        used_encoder: similarity.is_some(),
        weak: sentences.iter().all(|s| s.overlap == 0.0),
        sentences,
    })
}

/// One citation per source the sentences come from, in order of first use; `overlap` is the
/// number of sentences taken from it.
fn citations(sentences: &[Extracted], passages: &[Passage]) -> Vec<Citation> {
    let mut out: Vec<Citation> = Vec::new();
    for s in sentences {
        if let Some(c) = out.iter_mut().find(|c| c.n == s.n) {
            c.overlap += 1;
            continue;
        }
        out.push(Citation::of(s.n, &passages[s.n - 1], 1, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str, text: &str) -> Passage {
        Passage {
            chunk_id: format!("{id}:0"),
            doc_id: id.into(),
            source: id.into(),
            start: 10,
            end: 10 + text.chars().count(),
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn sentences_follow_markdown_units_and_sentence_ends() {
        let text = "# Title\n\nFirst one here. Second one\nwraps the line? Yes!\n- item one is here\n- item two\n\n`a...` b. c";
        let got: Vec<&str> = sentences(text).iter().map(|s| &text[s.start..s.end]).collect();
        assert_eq!(
            got,
            [
                "# Title",
                "First one here.",
                "Second one\nwraps the line?",
                "Yes!",
                "- item one is here",
                "- item two",
                "`a...` b.",
                "c"
            ]
        );
    }

    #[test]
    fn without_an_encoder_the_sentence_with_the_rare_question_words_wins_and_is_cited() {
        let a = passage(
            "readme.md",
            "Keel trains models. Every command takes `--json`; `KEEL_DATABASE_URL=postgres://...` keeps the records \
             in PostgreSQL instead of SQLite. Progress goes to stderr.",
        );
        let b = passage("arch.md", "The store speaks SQL. Migrations are applied in order by a small runner.");
        let q = "How do I keep the records in PostgreSQL instead of SQLite?";
        let e = extract(q, &[a, b], None, ExtractOptions::default()).unwrap();
        assert!(!e.used_encoder);
        assert_eq!(e.sentences.len(), 1, "{e:?}");
        assert!(e.answer.contains("KEEL_DATABASE_URL") && e.answer.ends_with("[1]"), "{}", e.answer);
        assert_eq!(e.citations[0].doc_id, "readme.md");
        // Offsets are the document's characters: the passage starts at 10.
        let s = &e.sentences[0];
        assert_eq!(s.start, 10 + "Keel trains models. ".len());
        assert_eq!(s.end - s.start, s.text.chars().count());
    }

    #[test]
    fn pieces_the_chunk_boundary_cut_are_not_candidates() {
        let q = "How long does green tea steep?";
        // Starts mid-sentence (the chunk is not the document's start) and ends mid-sentence.
        let p = passage(
            "tea.md",
            "steeped by the pot for two. Green tea steeps for two minutes at eighty degrees. Black tea steeps",
        );
        let e = extract(q, &[p], None, ExtractOptions { passages: 1, sentences: 3 }).unwrap();
        assert_eq!(e.candidates, 1, "{e:?}");
        assert_eq!(e.sentences[0].text, "Green tea steeps for two minutes at eighty degrees.");
    }

    #[test]
    fn an_answer_without_any_question_word_is_weak() {
        let p = passage("tea.md", "Green tea steeps for two minutes at eighty degrees. Black tea takes four minutes.");
        let e =
            extract("How do I rotate the keys?", std::slice::from_ref(&p), None, ExtractOptions::default()).unwrap();
        assert!(e.weak, "{e:?}");
        assert!(!extract("How long does green tea steep?", &[p], None, ExtractOptions::default()).unwrap().weak);
    }
}
