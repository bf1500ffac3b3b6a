-- Keel store schema, version 5: whether a generated answer was shown (keel-llm's groundedness
-- check). The other backend's 0005_grounding.sql is the same; keep them in step.

-- grounded: share of the generated answer's sentences supported by the chunks it cites (0..1);
-- decision: generated (shown), withheld (the extractive answer was shown instead). NULL for a
-- call that was not an answer (or was made before version 5).
ALTER TABLE llm_calls ADD COLUMN grounded DOUBLE PRECISION;
ALTER TABLE llm_calls ADD COLUMN decision TEXT;
