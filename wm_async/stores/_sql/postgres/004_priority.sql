-- Priority (semantics 48): higher is claimed first among due works, after expedited ones.
ALTER TABLE wm_work ADD COLUMN priority smallint NOT NULL DEFAULT 0;

-- Claims read due works in this order: expedited first, then higher priority, then due
-- time. wm_work_due stays for the next-due lookups, which read by due time alone.
CREATE INDEX wm_work_claim ON wm_work (expedited DESC, priority DESC, next_run_at)
    WHERE state = 'ENQUEUED';
