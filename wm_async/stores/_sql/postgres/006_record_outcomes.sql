-- Recording a batch of outcomes in one round trip: wm_apply is the compare-and-set
-- UPDATE of PostgresStore.apply, its NOTIFY, and the check for dependents to resolve,
-- in one statement (one transaction when autocommitted) instead of BEGIN, UPDATE,
-- the dependents' read and COMMIT.
--
-- When the batch finished a work that has BLOCKED dependents, or a work's generation is
-- not the one expected (its spec was updated meanwhile), it raises SQLSTATE WMA01: its
-- writes are rolled back and the caller runs the full transaction instead (propagation
-- level by level, records read back). A VOLATILE function: under READ COMMITTED each
-- statement below takes a new snapshot, so the dependents' check sees the edges of a
-- chained insert that the UPDATE waited for (its FOR SHARE lock on the prerequisite),
-- as the full transaction's separate statements do.
--
-- "w.id = ANY(p_id)" lets the planner find the rows by primary key whatever its
-- estimates (on a young table it would hash the whole table to join the arrays).
--
-- search_path is the store's schema (set by the migration), kept with the function.
CREATE FUNCTION wm_apply(
    p_token text, p_channel text, p_sender text, p_generation bigint[],
    p_id text[], p_exp_state text[], p_exp_attempts bigint[], p_exp_owner text[],
    p_state text[], p_run_attempt_count bigint[], p_next_run_at double precision[],
    p_last_enqueue_time double precision[], p_started_at double precision[],
    p_finished_at double precision[], p_output text[], p_progress text[],
    p_stop_reason text[], p_error_type text[], p_error_message text[],
    p_period_count bigint[], p_owner text[]
) RETURNS TABLE (written_id text, written_generation bigint)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off AS $$
DECLARE
    ids text[];
    states text[];
    generations bigint[];
BEGIN
    WITH w AS (
        UPDATE wm_work AS w SET state = v.state, run_attempt_count = v.run_attempt_count,
            next_run_at = v.next_run_at, last_enqueue_time = v.last_enqueue_time,
            started_at = v.started_at, finished_at = v.finished_at, output = v.output,
            progress = v.progress, stop_reason = v.stop_reason, error_type = v.error_type,
            error_message = v.error_message, period_count = v.period_count,
            owner = v.owner,
            lease_until = CASE WHEN v.state = 'RUNNING' THEN w.lease_until END,
            txn = p_token
        FROM unnest(p_id, p_exp_state, p_exp_attempts, p_exp_owner, p_state,
            p_run_attempt_count, p_next_run_at, p_last_enqueue_time, p_started_at,
            p_finished_at, p_output, p_progress, p_stop_reason, p_error_type,
            p_error_message, p_period_count, p_owner)
            AS v(id, exp_state, exp_attempts, exp_owner, state, run_attempt_count,
                 next_run_at, last_enqueue_time, started_at, finished_at, output,
                 progress, stop_reason, error_type, error_message, period_count, owner)
        WHERE w.id = ANY(p_id) AND w.id = v.id AND w.state = v.exp_state
            AND w.run_attempt_count = v.exp_attempts
            AND w.owner IS NOT DISTINCT FROM v.exp_owner
        RETURNING w.id, w.state, w.generation
    )
    SELECT array_agg(w.id), array_agg(w.state), array_agg(w.generation)
        INTO ids, states, generations FROM w;
    IF ids IS NULL THEN
        RETURN;  -- every guard failed: nothing written, nothing to announce
    END IF;
    IF EXISTS (
        SELECT 1 FROM unnest(ids, generations) AS r(id, generation)
        JOIN unnest(p_id, p_generation) AS x(id, generation) ON x.id = r.id
        WHERE r.generation <> x.generation
    ) OR EXISTS (
        SELECT 1 FROM unnest(ids, states) AS r(id, state)
        JOIN wm_dependency AS e ON e.prerequisite_id = r.id
        JOIN wm_work AS c ON c.id = e.work_id
        WHERE r.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND c.state = 'BLOCKED'
    ) THEN
        RAISE EXCEPTION 'wm_async: outcomes need the full transaction' USING ERRCODE = 'WMA01';
    END IF;
    -- The NOTIFY of every write (see _postgres_sql._notifying): 150 ids a payload.
    PERFORM pg_notify(p_channel, p_sender || ' ' || q.p) FROM (
        SELECT (CASE WHEN bool_or(s.state = 'ENQUEUED') THEN 'd' ELSE '-' END) || ' '
            || string_agg(s.id, ',') AS p
        FROM (SELECT r.id, r.state, (r.n - 1) / 150 AS g
              FROM unnest(ids, states) WITH ORDINALITY AS r(id, state, n)) AS s
        GROUP BY s.g
    ) AS q;
    RETURN QUERY SELECT r.id, r.generation FROM unnest(ids, generations) AS r(id, generation);
END
$$;
