-- Headers (semantics 49): what the app's propagators stored with a work at enqueue (a
-- trace context, say), as a JSON object of strings; '' when none.
ALTER TABLE wm_work ADD COLUMN headers text NOT NULL DEFAULT '';
