-- A limited worker's claim (semantics 50) reads that worker's due works alone, in claim
-- order: by worker first, so it seeks them rather than scanning every due work for them
-- (a limited worker with few or no works behind a large backlog of others made each
-- claim read the whole backlog).
CREATE INDEX wm_work_worker_claim ON wm_work (worker, expedited DESC, priority DESC, next_run_at)
    WHERE state = 'ENQUEUED';
