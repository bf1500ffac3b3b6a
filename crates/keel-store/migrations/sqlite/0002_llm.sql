-- Keel store schema, version 2: generation calls and the response cache (keel-llm).
-- migrations/postgres/0002_llm.sql is the same schema for the other backend; keep them in step.

-- One row per generation request as the caller saw it: a cache hit is a row too (no tokens
-- generated, cost 0), and so is a failure (error set), so cost and hit rate add up from here.
CREATE TABLE llm_calls (
    id             TEXT PRIMARY KEY,
    at             TEXT NOT NULL,
    generator      TEXT NOT NULL,             -- which generator answered (or the last one tried)
    model          TEXT NOT NULL,             -- the model id inside the cache key
    prompt_sha256  TEXT NOT NULL,             -- hash of the rendered messages
    cache_key      TEXT NOT NULL,             -- hash of model, prompt and parameters
    tokens_in      BIGINT NOT NULL,
    tokens_out     BIGINT NOT NULL,
    cost           DOUBLE PRECISION NOT NULL, -- from the configured prices per 1k tokens
    latency_ms     DOUBLE PRECISION NOT NULL,
    cache_hit      BIGINT NOT NULL,           -- 0 or 1
    attempts       BIGINT NOT NULL,           -- HTTP attempts and generators tried, in total
    error          TEXT                       -- set when every generator failed
);
CREATE INDEX llm_calls_at ON llm_calls (at);

-- key = sha256(model, prompt, parameters); response is the generation as JSON.
CREATE TABLE llm_cache (
    cache_key   TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    response    TEXT NOT NULL,
    tokens_in   BIGINT NOT NULL,
    tokens_out  BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);
