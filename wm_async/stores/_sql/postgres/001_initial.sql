-- wm_async PostgreSQL schema, version 1.
--
-- Applied by wm_async.stores.postgres in one transaction, under an advisory lock, with
-- search_path set to the store's schema (so several apps can share a database, one
-- schema each); the same transaction records the version in wm_schema. Never edit a
-- released migration: add NNN_name.sql instead.

-- One row per work: the spec (written at insert) and the runtime state (written by
-- claims and by apply's compare-and-set). The columns and their encodings are the
-- SQLite store's (see _codec.COLUMNS), so both stores share one row codec.
-- Times are UTC epoch seconds.
CREATE TABLE wm_work (
    seq               bigint GENERATED ALWAYS AS IDENTITY,  -- insertion order (tie-break)
    id                text             NOT NULL PRIMARY KEY,  -- str(uuid)
    worker            text             NOT NULL,
    input             text             NOT NULL,  -- compact JSON object, '' when empty
    tags              text             NOT NULL,  -- sorted JSON array of strings
    constraints       text             NOT NULL,  -- Constraints.to_json(), '' when default
    initial_delay     double precision NOT NULL,
    backoff_policy    text             NOT NULL,
    backoff_delay     double precision NOT NULL,
    backoff_max_delay double precision NOT NULL,
    timeout           double precision,
    max_attempts      bigint,
    expedited         smallint         NOT NULL,  -- 0 or 1
    input_merger      text             NOT NULL,
    unique_name       text,
    generation        bigint           NOT NULL,
    enqueued_at       double precision NOT NULL,
    periodic          text             NOT NULL,  -- Periodicity.to_json(), '' for one-time
    state             text             NOT NULL,  -- WorkState value
    run_attempt_count bigint           NOT NULL,
    next_run_at       double precision,
    last_enqueue_time double precision NOT NULL,
    started_at        double precision,
    finished_at       double precision,
    output            text             NOT NULL,
    progress          text             NOT NULL,
    stop_reason       text             NOT NULL,  -- StopReason value
    error_type        text,
    error_message     text,
    period_count      bigint           NOT NULL,
    owner             text,                       -- the claiming process, while RUNNING
    -- The signal names the work waits on, as ',a,b,' ('' for none; ',' and '%' inside a
    -- name are %-escaped), so a claim skips parked works with strpos().
    signals           text             NOT NULL,
    -- While RUNNING: when the owner's lease ends unless renewed (database or caller clock).
    lease_until       double precision
);

-- The due index: claims read it in order (expedited first, then by due time) and lock
-- rows with SKIP LOCKED, so concurrent claimers take disjoint batches.
CREATE INDEX wm_work_due ON wm_work (expedited DESC, next_run_at) WHERE state = 'ENQUEUED';

-- Running works by lease expiry: rescue of works whose process died.
CREATE INDEX wm_work_lease ON wm_work (lease_until) WHERE state = 'RUNNING';

-- Pruning finished works.
CREATE INDEX wm_work_finished ON wm_work (finished_at) WHERE finished_at IS NOT NULL;

-- Unique names. Deliberately not a UNIQUE index over unfinished states: chains (APPEND)
-- put several unfinished works under one name. Enqueues on one name are serialised by a
-- per-name advisory transaction lock instead (see PostgresStore.enqueue_unique).
CREATE INDEX wm_work_unique_name ON wm_work (unique_name) WHERE unique_name IS NOT NULL;

-- Tag lookups (queries, cancel by tag): tags ?| array['a', 'b'].
CREATE INDEX wm_work_tags ON wm_work USING gin ((tags::jsonb));

-- Queries return works oldest enqueue first.
CREATE INDEX wm_work_enqueued ON wm_work (enqueued_at, seq);
