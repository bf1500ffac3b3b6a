//! The answer shown, end to end on real parts: a real chat-completions peer on loopback writes
//! the generated answer (one faithful, one with an invented sentence), the real encoder checks
//! it, a real SQLite store records the decision; and the real local SmolLM2 in auto and
//! generate modes.

use std::sync::Arc;

use keel_llm::{
    AnswerMode, Ask, Capability, Chain, Decision, ExtractOptions, OpenAiCompatible, OpenAiConfig, Params, Passage,
    reply,
};

use crate::ground::embedder;
use crate::peer::{Peer, Step};
use crate::{model, store};

const QUESTION: &str = "How do I keep the records in PostgreSQL instead of SQLite?";

/// Two chunks of the repository's README, the one with the answer first (as retrieval ranks it).
fn readme() -> Vec<Passage> {
    let text = include_str!("../../../../README.md");
    let at = text.find("Every command takes `--json`").unwrap();
    let chunk = |start: usize, len: usize, n: usize| {
        let body: String = text[start..].chars().take(len).collect();
        Passage {
            chunk_id: format!("README.md:{n}"),
            doc_id: "README.md".into(),
            source: "README.md".into(),
            start: text[..start].chars().count(),
            end: text[..start].chars().count() + body.chars().count(),
            text: body,
            score: 1.0 / (n as f64 + 1.0),
        }
    };
    vec![chunk(at, 600, 0), chunk(0, 600, 1)]
}

fn ask(mode: AnswerMode, capable: bool) -> Ask {
    Ask {
        question: QUESTION.into(),
        passages: readme(),
        mode,
        capability: Capability { capable, why: if capable { "test: capable" } else { "test: not capable" }.into() },
        params: Params { max_tokens: 48, ..Params::default() },
        extract: ExtractOptions::default(),
        embed: Some(embedder()),
    }
}

fn remote(peer: &Peer) -> Arc<Chain> {
    let g = OpenAiCompatible::new(OpenAiConfig::new(peer.base_url(), "peer-model")).unwrap();
    Arc::new(Chain::new(vec![Box::new(g)]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invented_sentence_withholds_the_generated_answer_and_the_extractive_one_is_shown() {
    let (_home, store) = store().await;
    let invented = "Set `KEEL_DATABASE_URL=postgres://...` [1]. You can use `kube-config -vse_key=keel.env` to set \
                    a custom environment variable, then run `python3 -m keel serve --local` [1].";
    let peer = Peer::start(vec![Step::Say(invented.into())]);
    let r = reply(&store, Some(remote(&peer)), ask(AnswerMode::Auto, true), Box::new(|_| {})).await.unwrap();
    assert_eq!(r.decision, Decision::Withheld, "{r:#?}");
    assert_eq!(
        r.notice.as_deref(),
        Some("the generated answer was not supported by the documents; here are the passages that answer it")
    );
    assert!(!r.answer.contains("kube-config") && r.answer.contains("KEEL_DATABASE_URL"), "{}", r.answer);
    assert_eq!(r.citations[0].doc_id, "README.md");
    assert_eq!(r.grounded, 0.5, "one of two sentences is supported: {:#?}", r.grounding);
    assert!(r.grounding.sentences[1].missing.contains(&"kube".to_owned()));
    assert_eq!(r.shown_grounded, 1.0);
    assert_eq!(r.generation.as_ref().unwrap().answer, invented, "the withheld text is kept for the record");
    let calls = store.llm_calls(10).await.unwrap();
    assert_eq!((calls[0].grounded, calls[0].decision.as_deref()), (Some(0.5), Some("withheld")));

    // A faithful generation is shown as written, and its row says so.
    let faithful = "Set `KEEL_DATABASE_URL=postgres://...` to keep the records in PostgreSQL [1].";
    let peer = Peer::start(vec![Step::Say(faithful.into())]);
    let r = reply(&store, Some(remote(&peer)), ask(AnswerMode::Generate, false), Box::new(|_| {})).await.unwrap();
    assert_eq!((r.decision, r.answer.as_str(), r.notice.as_deref()), (Decision::Generated, faithful, None), "{r:#?}");
    assert_eq!(r.grounded, 1.0);
    assert_eq!(store.llm_calls(1).await.unwrap()[0].decision.as_deref(), Some("generated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_model_is_not_capable_so_auto_extracts_and_generate_is_checked() {
    let _serial = crate::SERIAL.lock().await;
    let (_home, store) = store().await;
    let local = model();
    let capability = keel_llm::capability_from_env();
    assert!(!capability.capable || std::env::var_os("KEEL_LLM_BASE_URL").is_some(), "{capability:?}");
    let runs = local.runs();
    let mut a = ask(AnswerMode::Auto, capability.capable);
    a.capability = Capability { capable: false, ..capability };
    let chain = Arc::new(Chain::new(vec![Box::new(Arc::clone(&local))]).unwrap());
    let r = reply(&store, Some(Arc::clone(&chain)), a, Box::new(|_| {})).await.unwrap();
    assert_eq!(r.decision, Decision::Extractive, "{r:#?}");
    assert!(r.answer.contains("KEEL_DATABASE_URL") && r.answer.contains("[1]"), "{}", r.answer);
    assert_eq!(r.citations[0].doc_id, "README.md");
    assert_eq!(local.runs(), runs, "auto with the local model generates nothing");
    assert!(store.llm_calls(10).await.unwrap().is_empty());

    // Forced to generate, the local model's answer is shown only if grounded; either way the
    // answer names the variable and the decision and score are on the call's row.
    let r = reply(&store, Some(chain), ask(AnswerMode::Generate, false), Box::new(|_| {})).await.unwrap();
    eprintln!("local: {:?} -> {:?} ({})", r.generation.as_ref().map(|g| &g.answer), r.decision, r.grounded);
    assert_eq!(local.runs(), runs + 1);
    assert!(matches!(r.decision, Decision::Generated | Decision::Withheld));
    assert_eq!(r.decision == Decision::Generated, r.grounding.grounded);
    if r.decision == Decision::Withheld {
        assert!(r.answer.contains("KEEL_DATABASE_URL"), "{}", r.answer);
        assert!(r.notice.as_deref().unwrap().starts_with("the local model's answer was not supported"));
    }
    let row = &store.llm_calls(1).await.unwrap()[0];
    assert_eq!((row.grounded, row.decision.as_deref()), (Some(r.grounded), Some(r.decision.as_str())));
}
