-- The whole schema as SQLite's migrations 0001 to 0010 left it, in
-- PostgreSQL's types: times are unix milliseconds (BIGINT), JSON is kept as
-- the text it arrived as (TEXT: the key order of a prompt or an output is
-- ComfyUI's and must come back as it went in, which JSONB would not keep).

-- Accounts and login sessions.
CREATE TABLE users (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('participant', 'admin')),
    created_at    BIGINT  NOT NULL,
    disabled_at   BIGINT,            -- NULL while the account is active
    -- An instructor's limits for this account, in place of the room's.
    max_pending   BIGINT,
    max_running   BIGINT,
    -- Made by joining with the room's shared password.
    room_member   BOOLEAN NOT NULL DEFAULT FALSE
);

-- Only a SHA-256 of each session token is kept, so a copy of the database
-- gives away no live sessions.
CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- One row per accepted prompt. `id` is the prompt_id at the gateway and at
-- the backend; `seq` orders submissions; `number` is ComfyUI's queue
-- priority (the counter, negated for front:true, or the client's number).
CREATE TABLE jobs (
    seq                 BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    user_id             BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state               TEXT    NOT NULL CHECK (state IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    number              DOUBLE PRECISION NOT NULL,
    number_is_float     BOOLEAN NOT NULL,
    prompt              TEXT    NOT NULL,  -- JSON: the API-format prompt
    extra_data          TEXT    NOT NULL,  -- JSON, without ComfyUI's sensitive keys
    outputs_to_execute  TEXT    NOT NULL,  -- JSON list of node ids
    partial_targets     TEXT,              -- JSON list, when the client restricted the outputs
    workflow_id         TEXT,
    attempts            BIGINT  NOT NULL DEFAULT 0,
    backend             TEXT,
    -- The backend slot a running job occupies: how a restarted gateway
    -- re-attaches to it.
    slot                BIGINT,
    created_at          BIGINT  NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    outputs             TEXT    NOT NULL DEFAULT '{}',  -- JSON {node_id: ui output}
    meta                TEXT    NOT NULL DEFAULT '{}',  -- JSON {node_id: {node_id, display_node, ...}}
    messages            TEXT    NOT NULL DEFAULT '[]',  -- JSON [[type, data], ...] for history
    error               TEXT,              -- JSON: the execution_error / execution_interrupted payload
    -- Handed back by a failed backend: first in its owner's queue, on
    -- another backend if one can take it.
    retry               BOOLEAN NOT NULL DEFAULT FALSE,
    avoid_backend       TEXT,
    -- When an instructor moved it to the front of the room's queue.
    bumped_at           BIGINT
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_user ON jobs(user_id, state);
CREATE INDEX jobs_by_start ON jobs(started_at);
CREATE INDEX jobs_by_finish ON jobs(finished_at);

-- Every instructor action: who did what to which target, and when.
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,  -- an instructor's name, or "admin token"
    action  TEXT   NOT NULL,  -- e.g. job.cancel, room.pause
    target  TEXT   NOT NULL,  -- a job id, a user name, a backend, "room"
    detail  TEXT   NOT NULL DEFAULT '{}'  -- JSON: what the action changed
);

-- The room's switches that outlive a restart (whether it is paused).
CREATE TABLE room_state (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);

-- Workflows an instructor pushed to the room, and whom each has reached.
CREATE TABLE room_workflows (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   NOT NULL,  -- the file name in Workflows, without .json
    content     TEXT   NOT NULL,  -- JSON: the workflow as the frontend saves it
    pushed_at   BIGINT NOT NULL,
    pushed_by   TEXT   NOT NULL
);

CREATE TABLE room_workflow_deliveries (
    workflow_id   BIGINT NOT NULL REFERENCES room_workflows(id) ON DELETE CASCADE,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    delivered_at  BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, user_id)
);

-- The room wall: outputs participants shared with the room.
CREATE TABLE wall_items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    file_name   TEXT   NOT NULL,  -- the output's name, for the caption
    ext         TEXT   NOT NULL,  -- the copy's extension (png, jpg, webp, ...)
    shared_at   BIGINT NOT NULL,
    hidden_at   BIGINT,           -- an instructor took it off the wall
    hidden_by   TEXT
);
CREATE INDEX wall_by_user ON wall_items(user_id);
