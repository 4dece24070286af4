-- One row per job that asked to be called back when it ends.
CREATE TABLE callbacks (
    job_id        TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    secret_env    TEXT NOT NULL,
    -- pending, delivered or failed (given up)
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_at       BIGINT NOT NULL DEFAULT 0,
    last_status   BIGINT,
    last_error    TEXT,
    delivered_at  BIGINT
);
CREATE INDEX callbacks_due ON callbacks (state, next_at);
