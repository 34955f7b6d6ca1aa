-- Rate-limited workers' token buckets (semantics 49): a claim of a limited worker's
-- works locks its row (FOR UPDATE: claims of that worker serialise across processes, so
-- the running count and the tokens they read are exact), refills the bucket to its
-- time, takes a token per work it starts, and writes it back in its transaction.
-- One row per limited worker (capped ones too: the row is the lock).
CREATE TABLE wm_limits (
    worker text PRIMARY KEY,
    tokens double precision NOT NULL,
    at     double precision NOT NULL       -- UTC epoch seconds of the tokens count
);
