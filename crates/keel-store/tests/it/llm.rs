//! Generation calls and the response cache (migration 0002), on every backend.

use keel_store::LlmCall;

use crate::on_each;

fn call(id: &str, at: &str, hit: bool, error: Option<&str>) -> LlmCall {
    LlmCall {
        id: id.into(),
        at: at.into(),
        generator: "local:smollm2-135m-instruct".into(),
        model: "smollm2-135m-instruct@b179c952".into(),
        prompt_sha256: "ab".repeat(32),
        cache_key: "cd".repeat(32),
        tokens_in: if hit { 0 } else { 120 },
        tokens_out: if hit { 0 } else { 17 },
        cost: if hit { 0.0 } else { 0.0123 },
        latency_ms: 812.5,
        cache_hit: hit,
        attempts: if hit { 0 } else { 3 },
        error: error.map(str::to_owned),
        grounded: None,
        decision: None,
    }
}

#[tokio::test]
async fn the_llm_cache_keeps_at_most_its_bound_and_drops_the_oldest_first() {
    on_each(|_config, store| async move {
        let policy = keel_store::LlmCachePolicy { max_entries: 3, ..Default::default() };
        let keys: Vec<String> = (0..6).map(|i| format!("{i:064x}")).collect();
        for k in &keys {
            store.llm_cache_put(k, ("m@1", &serde_json::json!({"text": k})), (1, 1), &policy).await.unwrap();
            // Distinct creation times (milliseconds), so the order is the insertion order.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let mut kept = Vec::new();
        for k in &keys {
            if store.llm_cached(k, &policy).await.unwrap().is_some() {
                kept.push(k.clone());
            }
        }
        assert_eq!(kept, keys[3..].to_vec(), "the three newest stay");
    })
    .await;
}

#[tokio::test]
async fn llm_calls_and_cache_round_trip() {
    on_each(|_config, store| async move {
        assert_eq!(store.llm_usage().await.unwrap().calls, 0);
        let key = "ef".repeat(32);
        let policy = keel_store::LlmCachePolicy::default();
        assert!(store.llm_cached(&key, &policy).await.unwrap().is_none());
        let response = serde_json::json!({"text": "Paris [1]", "finish": "stop"});
        store.llm_cache_put(&key, ("m@1", &response), (120, 17), &policy).await.unwrap();
        // The first write wins.
        store.llm_cache_put(&key, ("m@1", &serde_json::json!({"text": "other"})), (1, 1), &policy).await.unwrap();
        let got = store.llm_cached(&key, &policy).await.unwrap().unwrap();
        assert_eq!((got.response, got.tokens_in, got.tokens_out, got.model.as_str()), (response, 120, 17, "m@1"));
        // An expired response is not served.
        let now = keel_store::LlmCachePolicy { max_age: std::time::Duration::ZERO, ..policy };
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(store.llm_cached(&key, &now).await.unwrap().is_none());

        let a = call("a", "2026-01-01T00:00:00.000Z", false, None);
        let b = call("b", "2026-01-01T00:00:01.000Z", true, None);
        let c = call("c", "2026-01-01T00:00:02.000Z", false, Some("every generator failed"));
        for x in [&a, &b, &c] {
            store.record_llm_call(x).await.unwrap();
        }
        let calls = store.llm_calls(10).await.unwrap();
        assert_eq!(calls, vec![c.clone(), b.clone(), a.clone()]);
        assert_eq!(store.llm_calls(1).await.unwrap().len(), 1);
        let usage = store.llm_usage().await.unwrap();
        assert_eq!(
            (usage.calls, usage.cache_hits, usage.errors, usage.tokens_in, usage.tokens_out),
            (3, 1, 1, 240, 34)
        );
        assert!((usage.cost - 0.0246).abs() < 1e-9, "{usage:?}");
        // Ids are unique.
        assert!(store.record_llm_call(&a).await.is_err());

        // The groundedness check lands on its call's row (migration 0005); an unknown id is refused.
        store.record_llm_grounding("a", 0.5, "withheld").await.unwrap();
        let got = store.llm_calls(10).await.unwrap();
        let a2 = got.iter().find(|x| x.id == "a").unwrap();
        assert_eq!((a2.grounded, a2.decision.as_deref()), (Some(0.5), Some("withheld")));
        assert!(got.iter().find(|x| x.id == "b").unwrap().grounded.is_none());
        assert!(store.record_llm_grounding("nope", 1.0, "generated").await.is_err());
    })
    .await;
}
