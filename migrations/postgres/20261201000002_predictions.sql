-- Recorded runs of one model (an lm-evaluation-harness samples file), compared without re-running.
CREATE TABLE predictions (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    format      TEXT NOT NULL,
    task        TEXT,
    kind        TEXT NOT NULL,
    row_count   BIGINT NOT NULL,
    filters     TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    model       TEXT,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX predictions_name ON predictions (name, id);

-- One row per (document, filter); body is the recorded instance as JSON.
CREATE TABLE prediction_rows (
    prediction_id  TEXT NOT NULL REFERENCES predictions(id) ON DELETE CASCADE,
    idx            BIGINT NOT NULL,
    doc_id         TEXT NOT NULL,
    filter         TEXT NOT NULL,
    body           TEXT NOT NULL,
    PRIMARY KEY (prediction_id, idx)
);
CREATE UNIQUE INDEX prediction_rows_doc ON prediction_rows (prediction_id, filter, doc_id);
