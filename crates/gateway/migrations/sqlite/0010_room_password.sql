-- Accounts a participant made by joining with the room's shared password
-- (auth.room_password): the room's password logs them in again; they have
-- no password of their own.
ALTER TABLE users ADD COLUMN room_member INTEGER NOT NULL DEFAULT 0;
