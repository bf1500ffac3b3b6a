-- Keel store schema, version 4 (PostgreSQL): `keel run`'s pipeline steps and automatic decisions.
-- migrations/sqlite/0004_pipeline.sql is the same schema in SQLite's types.

-- One row per pipeline step that finished: looked up by its input key (the hash of its inputs,
-- its config section and the Keel version) so that a step done once is never done again.
CREATE TABLE pipeline_steps (
    project       TEXT NOT NULL,             -- the keel.toml project (model) name
    step          TEXT NOT NULL,             -- ingest | embed | train | evaluate | gate | register | promote
    input_key     TEXT NOT NULL,
    output        TEXT NOT NULL,             -- JSON: artifact hashes, dataset id, version number, ...
    keel_version  TEXT NOT NULL,
    status        TEXT NOT NULL,             -- succeeded
    run_id        TEXT,                      -- the pipeline run that did the work
    created_at    TEXT NOT NULL,
    PRIMARY KEY (project, step, input_key)
);

-- Every decision `keel run` (and `keel run --watch`) took on its own, with its reason.
CREATE TABLE pipeline_events (
    seq      BIGSERIAL PRIMARY KEY,
    project  TEXT NOT NULL,
    kind     TEXT NOT NULL,                  -- trigger | run | skip | promote | refuse | error
    reason   TEXT NOT NULL,
    details  TEXT NOT NULL,                  -- JSON
    at       TEXT NOT NULL
);
CREATE INDEX pipeline_events_project ON pipeline_events (project, seq);
