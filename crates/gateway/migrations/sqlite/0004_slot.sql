-- The backend slot a running job occupies: its socket's client id derives
-- from it, which is how a restarted gateway re-attaches to the job.
ALTER TABLE jobs ADD COLUMN slot INTEGER;
