-- wm_async SQLite schema, version 1.
--
-- Applied by wm_async.stores.sqlite inside BEGIN IMMEDIATE, in the same transaction that
-- sets PRAGMA user_version = 1 and PRAGMA application_id. Never edit a released migration:
-- add NNN_name.sql instead.

-- One row per work: the spec (written at insert) and the runtime state (written by claims
-- and by apply's compare-and-set). Times are UTC epoch seconds.
CREATE TABLE wm_work (
    id                TEXT    NOT NULL PRIMARY KEY,  -- str(uuid)
    worker            TEXT    NOT NULL,
    input             TEXT    NOT NULL,              -- compact JSON object, '' when empty
    tags              TEXT    NOT NULL,              -- sorted JSON array of strings
    constraints       TEXT    NOT NULL,              -- Constraints.to_json(), '' when default
    initial_delay     REAL    NOT NULL,
    backoff_policy    TEXT    NOT NULL,
    backoff_delay     REAL    NOT NULL,
    backoff_max_delay REAL    NOT NULL,
    timeout           REAL,
    max_attempts      INTEGER,
    expedited         INTEGER NOT NULL,              -- 0 or 1
    input_merger      TEXT    NOT NULL,
    unique_name       TEXT,
    generation        INTEGER NOT NULL,
    enqueued_at       REAL    NOT NULL,
    state             TEXT    NOT NULL,              -- WorkState value
    run_attempt_count INTEGER NOT NULL,
    next_run_at       REAL,
    last_enqueue_time REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    output            TEXT    NOT NULL,              -- compact JSON object, '' when empty
    progress          TEXT    NOT NULL,              -- compact JSON object, '' when empty
    stop_reason       TEXT    NOT NULL,              -- StopReason value
    error_type        TEXT,
    error_message     TEXT,
    period_count      INTEGER NOT NULL,
    owner             TEXT,
    -- The signal names the work waits on, sorted, as ',a,b,' ('' for none; ',' and '%'
    -- inside a name are %-escaped), so a claim can skip parked works with instr().
    signals           TEXT    NOT NULL
);

-- The due index. Claims and next-due lookups read it alone: signals is included so
-- parked works are skipped without visiting the table, and state because SQLite (3.40)
-- does not count the partial-index condition as covered. Queries must spell the literal
-- state = 'ENQUEUED' for SQLite to use this partial index.
CREATE INDEX wm_work_due ON wm_work (expedited, next_run_at, signals, state)
    WHERE state = 'ENQUEUED';

-- RUNNING works by owner: crash recovery and state queries.
CREATE INDEX wm_work_running ON wm_work (owner) WHERE state = 'RUNNING';

-- Pruning finished works.
CREATE INDEX wm_work_finished ON wm_work (finished_at) WHERE finished_at IS NOT NULL;

CREATE INDEX wm_work_unique_name ON wm_work (unique_name) WHERE unique_name IS NOT NULL;

-- Tag lookups (queries, cancel by tag). Kept in sync by the store on insert and prune.
CREATE TABLE wm_work_tag (
    tag     TEXT NOT NULL,
    work_id TEXT NOT NULL,
    PRIMARY KEY (tag, work_id)
) WITHOUT ROWID;
