-- An instructor's limits for one participant, in place of the room's
-- (limits.max_pending_per_user, limits.max_running_per_user); NULL: the
-- room's.
ALTER TABLE users ADD COLUMN max_pending INTEGER;
ALTER TABLE users ADD COLUMN max_running INTEGER;
