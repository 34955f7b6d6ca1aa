-- Paused workers (WorkManager.pause_worker): claims leave their works ENQUEUED until
-- they are resumed. One row per paused worker name.
CREATE TABLE wm_paused (
    worker text PRIMARY KEY,
    since  double precision NOT NULL       -- UTC epoch seconds
);
