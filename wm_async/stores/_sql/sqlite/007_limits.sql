-- Rate-limited workers' token buckets (semantics 50): a claim refills a worker's bucket
-- to its time, takes a token per work it starts, and writes it back in its transaction.
-- One row per worker that has been rate limited.
CREATE TABLE wm_limits (
    worker TEXT NOT NULL PRIMARY KEY,
    tokens REAL NOT NULL,
    at     REAL NOT NULL                   -- UTC epoch seconds of the tokens count
) WITHOUT ROWID;
