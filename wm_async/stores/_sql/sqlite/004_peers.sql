-- Cross-process notifications: one row per store following the file (SQLiteStore.follow),
-- the Unix datagram socket it listens on. A store that commits a write sends the ids it
-- wrote to every peer of its network namespace; a peer found dead (its address refuses)
-- is deleted by the first store that finds it so.
CREATE TABLE wm_peers (
    address TEXT    NOT NULL PRIMARY KEY,  -- the socket's name (Linux abstract namespace)
    netns   TEXT    NOT NULL,              -- the network namespace the name lives in
    pid     INTEGER NOT NULL,
    since   REAL    NOT NULL               -- UTC epoch seconds
) WITHOUT ROWID;
