-- Workflows an instructor pushed to the room, and whom each has reached:
-- a participant who logs in later gets the ones they have not had.
CREATE TABLE room_workflows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,  -- the file name in Workflows, without .json
    content     TEXT    NOT NULL,  -- JSON: the workflow as the frontend saves it
    pushed_at   INTEGER NOT NULL,
    pushed_by   TEXT    NOT NULL
);

CREATE TABLE room_workflow_deliveries (
    workflow_id   INTEGER NOT NULL REFERENCES room_workflows(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    delivered_at  INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, user_id)
);
