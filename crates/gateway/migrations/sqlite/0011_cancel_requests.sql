-- A cancel asked for on a gateway that does not dispatch (several share a
-- PostgreSQL database; kept here too so both schemas answer the same
-- operations): the dispatching gateway stops the run when it sees it.
ALTER TABLE jobs ADD COLUMN cancel_requested_at INTEGER;
