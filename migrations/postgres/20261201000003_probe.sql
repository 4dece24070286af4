-- One row that /readyz rewrites: readiness means a write succeeds, not only a read. The row
-- carries a 256 KiB pad, so a database about to run out of space is reported before it does.
CREATE TABLE probe (
    id   BIGINT PRIMARY KEY,
    at   BIGINT NOT NULL,
    pad  TEXT NOT NULL
);
