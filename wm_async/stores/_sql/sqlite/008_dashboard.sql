-- The dashboard's reads (wm_async.dashboard; Store.browse and Store.overview): lists
-- ordered newest first by (enqueued_at, id) with keyset pagination, and aggregates
-- read from indexes alone, so that pages stay fast at a million works.

-- How late the last run started: started_at minus the time it was due, written by the
-- claim (NULL before the first run).
ALTER TABLE wm_work ADD COLUMN late REAL;

-- Every work, newest first; a time range.
CREATE INDEX wm_work_browse ON wm_work (enqueued_at, id);

-- The works of one state, newest first; with worker, the counts of the unfinished
-- states by worker come from this index alone.
CREATE INDEX wm_work_browse_state ON wm_work (state, enqueued_at, id, worker);

-- The works of one worker, newest first.
CREATE INDEX wm_work_browse_worker ON wm_work (worker, enqueued_at, id);

-- Pruning, and the works finished in a window (counts by worker, tag and state,
-- throughput, run times, start lateness) read from the index alone.
DROP INDEX wm_work_finished;
CREATE INDEX wm_work_finished ON wm_work (finished_at, state, worker, started_at, late, tags)
    WHERE finished_at IS NOT NULL;
