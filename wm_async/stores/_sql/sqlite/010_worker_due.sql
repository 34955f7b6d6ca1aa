-- A limited worker's claim (semantics 50) reads that worker's due works alone: by worker
-- first, so it seeks them rather than scanning every due work for them (a limited
-- worker with few or no works behind a large backlog of others made each claim read
-- the whole backlog).
CREATE INDEX wm_work_worker_due ON wm_work (worker, expedited, priority, next_run_at, signals)
    WHERE state = 'ENQUEUED';
