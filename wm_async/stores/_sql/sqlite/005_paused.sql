-- Paused workers (WorkManager.pause_worker): claims leave their works ENQUEUED until
-- they are resumed. One row per paused worker name.
CREATE TABLE wm_paused (
    worker TEXT NOT NULL PRIMARY KEY,
    since  REAL NOT NULL                   -- UTC epoch seconds
) WITHOUT ROWID;
