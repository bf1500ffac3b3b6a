//! The local GGUF generator: tokenizer from the GGUF metadata, greedy generation, streaming.

use keel_llm::{Finish, GenRequest, Generator, Message, Params};

use crate::model;

#[test]
fn tokenizer_from_gguf_metadata_round_trips_and_knows_the_chat_tokens() {
    let m = model();
    let t = m.tokenizer();
    // Control tokens are single ids, matched inside the template's text only.
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap().get_ids().to_vec();
    assert_eq!(ids.first(), Some(&1), "{ids:?}");
    assert_eq!(ids.last(), Some(&2), "{ids:?}");
    // Untrusted text spelling them stays text.
    let ids = m.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert!(!ids.contains(&1) && !ids.contains(&2), "{ids:?}");
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    // Byte-level BPE: any text, including accents, emoji and digits, decodes back exactly.
    let text = "Zürich's 2017 budget: 1,234.5 m CHF — naïve café ☕ tokens\n\ttabs";
    let ids = m.encode(text).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    // The smollm pre-tokenizer splits digits one by one, and merges make words single tokens.
    let digits = m.encode("2017").unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
    let words = m.encode(" the president").unwrap();
    assert_eq!(words.len(), 2, "{:?}", t.decode(&words, false));
}

#[test]
fn greedy_generation_is_deterministic_streams_and_stops() {
    let _serial = crate::SERIAL.blocking_lock();
    let m = model();
    let req = GenRequest {
        messages: vec![Message::user("What is the capital of France? Answer with one word.")],
        params: Params { max_tokens: 24, ..Params::default() },
    };
    let mut streamed = String::new();
    let a = m.generate(&req, &mut |piece| streamed.push_str(piece)).unwrap();
    let timing = m.last_timing();
    let b = m.generate(&req, &mut |_| {}).unwrap();
    assert!(!a.text.is_empty());
    assert_eq!(a.text, b.text, "greedy decoding must not vary");
    assert_eq!(streamed.trim(), a.text);
    assert!(a.tokens_out as usize <= 24 && a.tokens_out > 0);
    assert_eq!(a.tokens_in as usize, m.prompt_tokens(&req.messages).unwrap());
    assert!(a.text.to_lowercase().contains("paris"), "{:?}", a.text);
    if a.finish == Finish::Stop {
        assert!(a.tokens_out < 24);
    }
    eprintln!(
        "prefill {} tokens in {:.0} ms; {} new tokens in {:.0} ms ({:.1} tokens/s): {:?}",
        timing.prompt_tokens,
        timing.prefill_ms,
        timing.new_tokens,
        timing.decode_ms,
        timing.new_tokens as f64 / (timing.decode_ms / 1e3),
        a.text
    );

    // A seeded sample is reproducible too.
    let sampled =
        GenRequest { params: Params { temperature: 0.8, seed: 7, max_tokens: 16, ..req.params.clone() }, ..req };
    let x = m.generate(&sampled, &mut |_| {}).unwrap();
    let y = m.generate(&sampled, &mut |_| {}).unwrap();
    assert_eq!(x.text, y.text);
}

#[test]
fn a_prompt_longer_than_the_window_is_refused() {
    let m = model();
    let long = "word ".repeat(1500);
    let req = GenRequest { messages: vec![Message::user(long)], params: Params { max_tokens: 8, ..Params::default() } };
    let err = m.generate(&req, &mut |_| {}).unwrap_err();
    assert!(matches!(err, keel_llm::LlmError::ContextTooSmall { .. }), "{err}");
}
