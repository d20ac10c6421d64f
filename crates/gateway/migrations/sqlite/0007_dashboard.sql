-- The instructor's dashboard reads the latest starts (wait times) and the
-- latest ends (each backend's recent work).
CREATE INDEX jobs_by_start ON jobs(started_at);
CREATE INDEX jobs_by_finish ON jobs(finished_at);
