-- Times are milliseconds since the Unix epoch; JSON documents are stored as text.
CREATE TABLE datasets (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    row_count   BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE dataset_rows (
    dataset_id  TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    idx         BIGINT NOT NULL,
    row_id      TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (dataset_id, idx)
);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    name              TEXT,
    status            TEXT NOT NULL,
    spec              TEXT NOT NULL,
    idempotency_key   TEXT,
    request_hash      TEXT,
    progress_done     BIGINT NOT NULL DEFAULT 0,
    progress_total    BIGINT NOT NULL,
    error             TEXT,
    report            TEXT,
    result            TEXT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (kind, idempotency_key);
CREATE INDEX jobs_kind_status ON jobs (kind, status, id);

CREATE TABLE shards (
    job_id        TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    range_start   BIGINT NOT NULL,
    range_end     BIGINT NOT NULL,
    status        TEXT NOT NULL,
    attempt       BIGINT NOT NULL DEFAULT 0,
    released      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    worker_id     TEXT,
    lease_until   BIGINT,
    done          BIGINT NOT NULL DEFAULT 0,
    checkpoint    TEXT,
    error         TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX shards_status ON shards (status, lease_until);

CREATE TABLE instances (
    job_id       TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx          BIGINT NOT NULL,
    instance_id  TEXT NOT NULL,
    flip         TEXT NOT NULL,
    gold         BIGINT,
    tags         TEXT NOT NULL,
    old_side     TEXT NOT NULL,
    new_side     TEXT NOT NULL,
    shard_idx    BIGINT NOT NULL,
    attempt      BIGINT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX instances_flip ON instances (job_id, flip, idx);

CREATE TABLE instance_slices (
    job_id  TEXT NOT NULL,
    idx     BIGINT NOT NULL,
    slice   TEXT NOT NULL,
    PRIMARY KEY (job_id, slice, idx),
    FOREIGN KEY (job_id, idx) REFERENCES instances(job_id, idx) ON DELETE CASCADE
);
