-- Periodic work: Periodicity.to_json() as compact JSON, '' for one-time work.
ALTER TABLE wm_work ADD COLUMN periodic TEXT NOT NULL DEFAULT '';
