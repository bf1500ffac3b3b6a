-- Keel store schema, version 1 (PostgreSQL). migrations/sqlite/0001_init.sql is the same schema
-- in SQLite's types; keep the two in step. Timestamps are fixed-width RFC 3339 text in UTC
-- (text order is time order); JSON columns are text.

CREATE TABLE artifacts (
    sha256      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE datasets (
    id                   TEXT PRIMARY KEY,  -- content hash of the accepted records
    name                 TEXT NOT NULL,
    source               TEXT NOT NULL,     -- the path as the user gave it
    source_sha256        TEXT NOT NULL,     -- hash of the raw file's bytes
    rows_read            BIGINT NOT NULL,
    n_records            BIGINT NOT NULL,
    n_quarantined        BIGINT NOT NULL,
    records_artifact     TEXT NOT NULL REFERENCES artifacts (sha256),
    quarantine_artifact  TEXT NOT NULL REFERENCES artifacts (sha256),
    created_at           TEXT NOT NULL
);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,             -- running | succeeded | failed
    params        TEXT NOT NULL,
    metrics       TEXT,
    dataset_id    TEXT REFERENCES datasets (id),
    error         TEXT,
    code_version  TEXT NOT NULL,
    host          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT
);

CREATE TABLE models (
    name          TEXT PRIMARY KEY,
    next_version  BIGINT NOT NULL,          -- taken and bumped in the registering transaction
    created_at    TEXT NOT NULL
);

CREATE TABLE model_versions (
    name           TEXT NOT NULL REFERENCES models (name),
    version        BIGINT NOT NULL,
    input_key      TEXT NOT NULL,            -- hash of dataset, encoder and training config
    run_id         TEXT NOT NULL REFERENCES runs (id),
    dataset_id     TEXT NOT NULL REFERENCES datasets (id),
    encoder_id     TEXT NOT NULL,
    head_artifact  TEXT NOT NULL REFERENCES artifacts (sha256),
    metrics        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, input_key)
);

CREATE TABLE aliases (
    name        TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version)
);

-- Every alias move, for `keel rollback` and for the record.
CREATE TABLE alias_events (
    seq               BIGSERIAL PRIMARY KEY,
    name              TEXT NOT NULL,
    alias             TEXT NOT NULL,
    version           BIGINT NOT NULL,
    previous_version  BIGINT,
    reason            TEXT NOT NULL,
    at                TEXT NOT NULL
);

CREATE TABLE embedding_cache (
    encoder_id   TEXT NOT NULL,
    text_sha256  TEXT NOT NULL,
    vector       BYTEA NOT NULL,              -- little-endian f32
    PRIMARY KEY (encoder_id, text_sha256)
);

CREATE TABLE predictions (
    id            TEXT PRIMARY KEY,
    at            TEXT NOT NULL,
    model         TEXT NOT NULL,             -- NAME@VERSION that answered
    input_sha256  TEXT NOT NULL,
    input_text    TEXT NOT NULL,
    label         TEXT NOT NULL,
    scores        TEXT NOT NULL,
    latency_ms    DOUBLE PRECISION NOT NULL,
    degraded      BIGINT NOT NULL            -- 0 or 1
);
CREATE INDEX predictions_at ON predictions (at);

CREATE TABLE feedback (
    prediction_id  TEXT NOT NULL REFERENCES predictions (id),
    label          TEXT NOT NULL,
    at             TEXT NOT NULL
);
CREATE INDEX feedback_prediction ON feedback (prediction_id);
