-- A cancel asked for on a gateway that does not dispatch: the signal to
-- the dispatching gateway may be lost (or nobody dispatches that moment),
-- so the request is kept on the job, and the dispatching gateway stops
-- the run when it sees it.
ALTER TABLE jobs ADD COLUMN cancel_requested_at BIGINT;
