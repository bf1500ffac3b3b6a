//! Generation calls and the response cache (keel-llm's records; migration 0002).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::store::Store;
use crate::tx::write_tx;
use crate::{Result, StoreError};

/// One generation request as the caller saw it: answered from the cache, generated, or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    pub id: String,
    pub at: String,
    /// The generator that answered, or the last one tried when all failed.
    pub generator: String,
    /// Model id as it enters the cache key.
    pub model: String,
    pub prompt_sha256: String,
    pub cache_key: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// In the currency of the configured prices (per 1k tokens); 0 for cache hits.
    pub cost: f64,
    pub latency_ms: f64,
    pub cache_hit: bool,
    /// HTTP attempts (including retries) plus local runs, over the whole fallback chain.
    pub attempts: u64,
    pub error: Option<String>,
    /// Share of the answer's sentences its cited chunks support, when it was checked.
    #[serde(default)]
    pub grounded: Option<f64>,
    /// What was shown: `generated` or `withheld` (see keel-llm's `reply`).
    #[serde(default)]
    pub decision: Option<String>,
}

/// A cached generation: `response` is whatever JSON the generator layer stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    pub cache_key: String,
    pub model: String,
    pub response: serde_json::Value,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub created_at: String,
}

/// Totals over recorded calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    pub calls: u64,
    pub cache_hits: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: f64,
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} does not fit in the store")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Records one generation call (its own transaction).
    pub async fn record_llm_call(&self, call: &LlmCall) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        sqlx::query(
            "INSERT INTO llm_calls (id, at, generator, model, prompt_sha256, cache_key, tokens_in, tokens_out,
                                    cost, latency_ms, cache_hit, attempts, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&call.id)
        .bind(&call.at)
        .bind(&call.generator)
        .bind(&call.model)
        .bind(&call.prompt_sha256)
        .bind(&call.cache_key)
        .bind(to_i64(call.tokens_in, "tokens_in")?)
        .bind(to_i64(call.tokens_out, "tokens_out")?)
        .bind(call.cost)
        .bind(call.latency_ms)
        .bind(i64::from(call.cache_hit))
        .bind(to_i64(call.attempts, "attempts")?)
        .bind(call.error.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the groundedness check of the answer call `id` produced, and what was shown.
    pub async fn record_llm_grounding(&self, id: &str, grounded: f64, decision: &str) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        let done = sqlx::query("UPDATE llm_calls SET grounded = $1, decision = $2 WHERE id = $3")
            .bind(grounded)
            .bind(decision)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Invalid(format!("no generation call {id} to record a groundedness check on")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The most recent calls, newest first.
    pub async fn llm_calls(&self, limit: i64) -> Result<Vec<LlmCall>> {
        let rows = sqlx::query(
            "SELECT id, at, generator, model, prompt_sha256, cache_key, tokens_in, tokens_out, cost, latency_ms,
                    cache_hit, attempts, error, grounded, decision
             FROM llm_calls ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LlmCall {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    generator: r.try_get("generator")?,
                    model: r.try_get("model")?,
                    prompt_sha256: r.try_get("prompt_sha256")?,
                    cache_key: r.try_get("cache_key")?,
                    tokens_in: to_u64(r.try_get("tokens_in")?),
                    tokens_out: to_u64(r.try_get("tokens_out")?),
                    cost: r.try_get("cost")?,
                    latency_ms: r.try_get("latency_ms")?,
                    cache_hit: r.try_get::<i64, _>("cache_hit")? != 0,
                    attempts: to_u64(r.try_get("attempts")?),
                    error: r.try_get("error")?,
                    grounded: r.try_get("grounded")?,
                    decision: r.try_get("decision")?,
                })
            })
            .collect()
    }

    /// Totals over every recorded call.
    pub async fn llm_usage(&self) -> Result<LlmUsage> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS calls,
                    CAST(COALESCE(SUM(cache_hit), 0) AS BIGINT) AS hits,
                    CAST(COALESCE(SUM(CASE WHEN error IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS errors,
                    CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT) AS tokens_in,
                    CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT) AS tokens_out,
                    CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS cost
             FROM llm_calls",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(LlmUsage {
            calls: to_u64(r.try_get("calls")?),
            cache_hits: to_u64(r.try_get("hits")?),
            errors: to_u64(r.try_get("errors")?),
            tokens_in: to_u64(r.try_get("tokens_in")?),
            tokens_out: to_u64(r.try_get("tokens_out")?),
            cost: r.try_get("cost")?,
        })
    }

    /// The cached response for `cache_key`, if there is one younger than `policy.max_age`.
    pub async fn llm_cached(&self, cache_key: &str, policy: &LlmCachePolicy) -> Result<Option<CachedResponse>> {
        let row = sqlx::query(
            "SELECT cache_key, model, response, tokens_in, tokens_out, created_at FROM llm_cache
             WHERE cache_key = $1 AND created_at >= $2",
        )
        .bind(cache_key)
        .bind(crate::ago(policy.max_age))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let response: String = r.try_get("response")?;
            Ok(CachedResponse {
                cache_key: r.try_get("cache_key")?,
                model: r.try_get("model")?,
                response: serde_json::from_str(&response)?,
                tokens_in: to_u64(r.try_get("tokens_in")?),
                tokens_out: to_u64(r.try_get("tokens_out")?),
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// Caches a response. The first write for a key wins: a concurrent identical request that
    /// also generated keeps the stored answer (same key means same model, prompt and parameters).
    /// Then the cache is trimmed to `policy`: expired responses go, and the oldest beyond
    /// `max_entries`.
    pub async fn llm_cache_put(
        &self,
        cache_key: &str,
        (model, response): (&str, &serde_json::Value),
        (tokens_in, tokens_out): (u64, u64),
        policy: &LlmCachePolicy,
    ) -> Result<()> {
        let mut tx = write_tx(&self.pool, self.backend).await?;
        sqlx::query(
            "INSERT INTO llm_cache (cache_key, model, response, tokens_in, tokens_out, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cache_key) DO NOTHING",
        )
        .bind(cache_key)
        .bind(model)
        .bind(response.to_string())
        .bind(to_i64(tokens_in, "tokens_in")?)
        .bind(to_i64(tokens_out, "tokens_out")?)
        .bind(crate::now())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM llm_cache WHERE created_at < $1")
            .bind(crate::ago(policy.max_age))
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM llm_cache").fetch_one(&mut *tx).await?;
        let over = n - i64::try_from(policy.max_entries).unwrap_or(i64::MAX);
        if over > 0 {
            sqlx::query(
                "DELETE FROM llm_cache WHERE cache_key IN
                 (SELECT cache_key FROM llm_cache ORDER BY created_at, cache_key LIMIT $1)",
            )
            .bind(over)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// How long a cached LLM response is served, and how many are kept (the oldest go first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlmCachePolicy {
    pub max_age: std::time::Duration,
    pub max_entries: u64,
}

impl Default for LlmCachePolicy {
    /// A week, 10,000 responses (a few tens of megabytes of text).
    fn default() -> Self {
        Self { max_age: std::time::Duration::from_secs(7 * 24 * 3600), max_entries: 10_000 }
    }
}
