-- Write tokens: every write stamps the rows it writes with the token of its operation
-- (one per store call, the same on each retry of it). When a connection drops after a
-- COMMIT but before its answer arrived, the retry recognises its own committed write by
-- the token and reports it instead of failing its compare-and-set guard; a claim whose
-- answer was lost finds the works it took (RUNNING, its owner, its token) and runs them.
-- Not indexed: recognition reads rows by id, or RUNNING rows (wm_work_lease), and an
-- index would stop updates from being HOT.
ALTER TABLE wm_work ADD COLUMN txn text;
