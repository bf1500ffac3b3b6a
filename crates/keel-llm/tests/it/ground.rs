//! The groundedness check and the extractive answer with the real encoder: the thresholds hold
//! on the labelled sample they were chosen on (`tests/data/grounding.jsonl`: 44 answer
//! sentences, each labelled supported or not by the passage beside it), and the README's
//! PostgreSQL question is answered from the README sentence that holds the answer.

use std::sync::Arc;

use keel_llm::{Embedder, ExtractOptions, Passage, check, extract};
use serde::Deserialize;

pub fn embedder() -> Embedder {
    let enc = keel_test_support::encoder_arc();
    Arc::new(move |texts: &[&str]| enc.embed(texts).map_err(|e| e.to_string()))
}

fn passage(id: &str, text: &str) -> Passage {
    Passage {
        chunk_id: format!("{id}:0"),
        doc_id: id.into(),
        source: id.into(),
        start: 0,
        end: text.chars().count(),
        text: text.into(),
        score: 1.0,
    }
}

#[derive(Deserialize)]
struct Labelled {
    passage: String,
    question: String,
    sentence: String,
    supported: bool,
}

fn sample() -> Vec<Labelled> {
    let text = include_str!("../data/grounding.jsonl");
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (similarity, support, label) for every labelled sentence.
fn features() -> Vec<(f64, f64, bool)> {
    let embed = embedder();
    sample()
        .iter()
        .map(|row| {
            let p = passage("p", &row.passage);
            let g = check(&row.question, &row.sentence, &[&p], Some(&embed)).unwrap();
            assert_eq!(g.sentences.len(), 1, "{}", row.sentence);
            let s = &g.sentences[0];
            (s.similarity.unwrap(), s.support, row.supported)
        })
        .collect()
}

#[test]
fn the_thresholds_separate_the_labelled_sample() {
    let f = features();
    let (pos, neg) = (f.iter().filter(|x| x.2).count(), f.iter().filter(|x| !x.2).count());
    assert_eq!((pos, neg), (25, 19));
    // The sweep that chose the thresholds (printed with --nocapture for ARCHITECTURE.md).
    for sim in [0.0, 0.35, 0.4, 0.5, 0.6, 0.7] {
        for sup in [0.4, 0.5, 0.6, 0.7, 0.8] {
            let pass = |x: &&(f64, f64, bool)| x.0 >= sim && x.1 >= sup;
            let tp = f.iter().filter(|x| x.2).filter(pass).count();
            let fp = f.iter().filter(|x| !x.2).filter(pass).count();
            eprintln!(
                "similarity >= {sim} and support >= {sup}: {tp}/{pos} supported pass, {fp}/{neg} unsupported pass"
            );
        }
    }
    for (s, w, l) in &f {
        eprintln!("{l:5} similarity {s:.3} support {w:.2}");
    }
    let (sim, sup) = (keel_llm::ground::MIN_SIMILARITY, keel_llm::ground::MIN_SUPPORT);
    let passed = |x: &&(f64, f64, bool)| x.0 >= sim && x.1 >= sup;
    let tp = f.iter().filter(|x| x.2).filter(passed).count();
    let fp = f.iter().filter(|x| !x.2).filter(passed).count();
    // No invented sentence is shown; at most a few faithful ones are withheld (then the
    // extractive answer is shown, which is also faithful).
    assert_eq!(fp, 0, "an unsupported sentence passes the check");
    assert!(tp + 1 >= pos, "only {tp} of {pos} supported sentences pass");
}

const README_STORE: &str = "Every command takes `--json` (one JSON document on stdout) and `--home DIR` (or \
`KEEL_HOME`) to\nchoose the project store; `KEEL_DATABASE_URL=postgres://...` keeps the records in PostgreSQL\ninstead \
of SQLite. Progress and logs go to stderr.\n\nHTTP (`keel serve`, loopback by default): `POST /v1/classify`, `POST \
/v1/embeddings`\n(OpenAI-compatible, `float` or `base64`), `GET /v1/models`, `GET /healthz`.";

#[test]
fn the_issue_answer_is_not_grounded_and_the_extractive_answer_is() {
    let embed = embedder();
    let q = "How do I keep the records in PostgreSQL instead of SQLite?";
    let p = passage("README.md", README_STORE);
    // The answer the local model gave in issue 26.
    let invented = "You can use `kube-config -vse_key=keel.env` to set a custom environment variable for the \
                    database. Then run `python3 -m keel serve --local` [1].";
    let g = check(q, invented, &[&p], Some(&embed)).unwrap();
    assert!(!g.grounded && g.score == 0.0, "{g:?}");
    let e = extract(q, std::slice::from_ref(&p), Some(&embed), ExtractOptions::default()).unwrap();
    assert!(e.used_encoder);
    assert!(e.sentences[0].text.contains("KEEL_DATABASE_URL"), "{e:?}");
    assert_eq!(e.citations[0].doc_id, "README.md");
    let cited = [&p];
    assert!(check(q, &e.answer, &cited, Some(&embed)).unwrap().grounded);
}
