-- Priority (semantics 48): higher is claimed first among due works, after expedited ones.
ALTER TABLE wm_work ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

-- The due index, now by priority within expedited: a claim finds the priorities present
-- (one index seek each), then reads each priority's due works in due order.
DROP INDEX wm_work_due;
CREATE INDEX wm_work_due ON wm_work (expedited, priority, next_run_at, signals, state)
    WHERE state = 'ENQUEUED';
