-- One row per accepted prompt. `id` is the prompt_id at the gateway and at
-- the backend; `seq` orders submissions; `number` is ComfyUI's queue
-- priority (the counter, negated for front:true, or the client's number).
CREATE TABLE jobs (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT    NOT NULL UNIQUE,
    user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state               TEXT    NOT NULL CHECK (state IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    number              REAL    NOT NULL,
    number_is_float     INTEGER NOT NULL,
    prompt              TEXT    NOT NULL,  -- JSON: the API-format prompt
    extra_data          TEXT    NOT NULL,  -- JSON, without ComfyUI's sensitive keys
    outputs_to_execute  TEXT    NOT NULL,  -- JSON list of node ids
    partial_targets     TEXT,              -- JSON list, when the client restricted the outputs
    workflow_id         TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    backend             TEXT,
    created_at          INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    outputs             TEXT    NOT NULL DEFAULT '{}',  -- JSON {node_id: ui output}
    meta                TEXT    NOT NULL DEFAULT '{}',  -- JSON {node_id: {node_id, display_node, ...}}
    messages            TEXT    NOT NULL DEFAULT '[]',  -- JSON [[type, data], ...] for history
    error               TEXT               -- JSON: the execution_error / execution_interrupted payload
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_user ON jobs(user_id, state);
