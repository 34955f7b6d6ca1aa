-- Limited workers (semantics 49): a claim of a limited worker's works locks its row
-- (FOR UPDATE: claims of that worker serialise across processes, so the running count
-- and the tokens they read are exact), refills a rate-limited worker's bucket to its
-- time, takes a token per work it starts, and writes it back in its transaction.
-- One row per limited worker; tokens and at are NULL until the bucket is first used.
CREATE TABLE wm_limits (
    worker text PRIMARY KEY,
    tokens double precision,
    at     double precision                -- UTC epoch seconds of the tokens count
);
