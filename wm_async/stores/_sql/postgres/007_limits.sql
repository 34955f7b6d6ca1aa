-- Limited workers (semantics 50): one row per limited worker, the version every claim
-- of its works bumps (a claim is valid only if the version it read is still the one it
-- locks: see _postgres_sql.Schema._limited), and a rate-limited worker's token bucket
-- (tokens and at are NULL until the bucket is first used).
CREATE TABLE wm_limits (
    worker  text PRIMARY KEY,
    tokens  double precision,
    at      double precision,              -- UTC epoch seconds of the tokens count
    version bigint NOT NULL DEFAULT 0
);
