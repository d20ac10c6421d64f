-- A job handed back by a failed backend goes to the front of its owner's
-- queue (`retry`), preferably on another backend (`avoid_backend`).
ALTER TABLE jobs ADD COLUMN retry INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN avoid_backend TEXT;
