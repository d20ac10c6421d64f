-- The room wall: outputs participants shared with the room. The image is
-- copied into the data directory's wall/ folder as <id>.<ext>, so the wall
-- keeps it whatever its author does with their own files.
CREATE TABLE wall_items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    file_name   TEXT    NOT NULL,  -- the output's name, for the caption
    ext         TEXT    NOT NULL,  -- the copy's extension (png, jpg, webp, ...)
    shared_at   INTEGER NOT NULL,
    hidden_at   INTEGER,           -- an instructor took it off the wall
    hidden_by   TEXT
);
CREATE INDEX wall_by_user ON wall_items(user_id);
