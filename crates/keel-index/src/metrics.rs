//! Retrieval metrics over ranked document ids and graded relevance judgements (qrels), as
//! trec_eval and BEIR compute them: gain = relevance grade, discount log2(rank + 1).

use std::collections::HashMap;

use serde::Serialize;

/// Relevance grade by document id, for one query. Grades ≤ 0 count as not relevant.
pub type Judgements = HashMap<String, i32>;

/// nDCG@k: DCG of the ranking's top k divided by the DCG of the ideal ranking's top k.
/// 0 when the query has no relevant document.
pub fn ndcg_at_k(ranked: &[&str], rel: &Judgements, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| rel.get(*d).copied().unwrap_or(0).max(0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<i32> = rel.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, &g)| g as f64 / ((i + 2) as f64).log2()).sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Share of the relevant documents found in the top k.
pub fn recall_at_k(ranked: &[&str], rel: &Judgements, k: usize) -> f64 {
    let relevant = rel.values().filter(|&&g| g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|d| rel.get(**d).is_some_and(|&g| g > 0)).count();
    found as f64 / relevant as f64
}

/// Reciprocal rank of the first relevant document within the top k (0 when none).
pub fn reciprocal_rank(ranked: &[&str], rel: &Judgements, k: usize) -> f64 {
    ranked.iter().take(k).position(|d| rel.get(*d).is_some_and(|&g| g > 0)).map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Means over the queries that have at least one relevant document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetrievalMetrics {
    pub queries: usize,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
}

/// Scores a run: for each query id, its ranked document ids (best first).
pub fn score_run(run: &[(String, Vec<String>)], qrels: &HashMap<String, Judgements>) -> RetrievalMetrics {
    let mut m = RetrievalMetrics::default();
    for (qid, docs) in run {
        let Some(rel) = qrels.get(qid).filter(|r| r.values().any(|&g| g > 0)) else { continue };
        let ranked: Vec<&str> = docs.iter().map(String::as_str).collect();
        m.queries += 1;
        m.ndcg_at_10 += ndcg_at_k(&ranked, rel, 10);
        m.recall_at_10 += recall_at_k(&ranked, rel, 10);
        m.recall_at_100 += recall_at_k(&ranked, rel, 100);
        m.mrr_at_10 += reciprocal_rank(&ranked, rel, 10);
    }
    if m.queries > 0 {
        let n = m.queries as f64;
        m.ndcg_at_10 /= n;
        m.recall_at_10 /= n;
        m.recall_at_100 /= n;
        m.mrr_at_10 /= n;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pairs: &[(&str, i32)]) -> Judgements {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    const EPS: f64 = 1e-12;

    #[test]
    fn ndcg_hand_computed() {
        // Relevant: a (grade 3), b (grade 1). Ranking: x, a, b.
        // DCG = 3/log2(3) + 1/log2(4) = 1.892789... + 0.5; IDCG = 3/log2(2) + 1/log2(3) = 3.630930...
        let r = rel(&[("a", 3), ("b", 1), ("z", 0)]);
        let got = ndcg_at_k(&["x", "a", "b"], &r, 10);
        let want = (3.0 / 3f64.log2() + 0.5) / (3.0 + 1.0 / 3f64.log2());
        assert!((got - want).abs() < EPS, "{got} vs {want}");
        assert!((got - 0.6590).abs() < 1e-4);
        // Perfect ranking is 1; cut at k = 1 with the best document second is 0.
        assert!((ndcg_at_k(&["a", "b"], &r, 10) - 1.0).abs() < EPS);
        assert_eq!(ndcg_at_k(&["x", "a"], &r, 1), 0.0);
        // One relevant document at rank 3: 1/log2(4) = 0.5.
        assert!((ndcg_at_k(&["x", "y", "a"], &rel(&[("a", 1)]), 10) - 0.5).abs() < EPS);
        assert_eq!(ndcg_at_k(&["a"], &rel(&[]), 10), 0.0);
    }

    #[test]
    fn recall_and_rr_hand_computed() {
        let r = rel(&[("a", 1), ("b", 2), ("c", 1), ("n", 0)]);
        let ranked = ["x", "b", "n", "a"];
        assert!((recall_at_k(&ranked, &r, 2) - 1.0 / 3.0).abs() < EPS);
        assert!((recall_at_k(&ranked, &r, 10) - 2.0 / 3.0).abs() < EPS);
        assert!((reciprocal_rank(&ranked, &r, 10) - 0.5).abs() < EPS);
        assert_eq!(reciprocal_rank(&ranked, &r, 1), 0.0);
        assert_eq!(reciprocal_rank(&["n"], &r, 10), 0.0); // grade 0 is not relevant
    }

    #[test]
    fn run_means_skip_queries_without_judgements() {
        let qrels: HashMap<String, Judgements> =
            [("q1".to_string(), rel(&[("a", 1)])), ("q2".to_string(), rel(&[("b", 1)]))].into();
        let run = vec![
            ("q1".to_string(), vec!["a".to_string()]),
            ("q2".to_string(), vec!["x".to_string(), "b".to_string()]),
            ("q3".to_string(), vec!["a".to_string()]),
        ];
        let m = score_run(&run, &qrels);
        assert_eq!(m.queries, 2);
        assert!((m.mrr_at_10 - 0.75).abs() < EPS); // (1 + 1/2) / 2
        assert!((m.ndcg_at_10 - (1.0 + 1.0 / 3f64.log2()) / 2.0).abs() < EPS);
        assert!((m.recall_at_10 - 1.0).abs() < EPS);
    }
}
