-- The instructor's console.
--
-- A job an instructor moved to the front of the room's queue, and when:
-- it runs in the instructor lane, before every job that is not there.
ALTER TABLE jobs ADD COLUMN bumped_at INTEGER;

-- Every instructor action: who did what to which target, and when.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,  -- an instructor's name, or "admin token"
    action  TEXT    NOT NULL,  -- e.g. job.cancel, room.pause
    target  TEXT    NOT NULL,  -- a job id, a user name, a backend, "room"
    detail  TEXT    NOT NULL DEFAULT '{}'  -- JSON: what the action changed
);

-- The room's switches that outlive a restart (whether it is paused).
CREATE TABLE room_state (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
