-- Chains (docs/semantics.md, rules 17-21): the edges of the work graph, and for each BLOCKED work the
-- number of its prerequisites that have not succeeded yet (the last success unblocks it).
CREATE TABLE wm_dependency (
    prerequisite_id text    NOT NULL,
    work_id         text    NOT NULL,
    position        integer NOT NULL,  -- the order of the prerequisites, for input merging
    PRIMARY KEY (prerequisite_id, work_id)
);

-- A work's prerequisites in order (input merging, pruning).
CREATE INDEX wm_dependency_work ON wm_dependency (work_id, position);

ALTER TABLE wm_work ADD COLUMN waiting integer NOT NULL DEFAULT 0;
