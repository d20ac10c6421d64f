-- Messages between gateways sharing this database too long for a NOTIFY
-- payload (PostgreSQL's limit is 8000 bytes): the notification carries the
-- row's id, and rows older than a minute are deleted.
CREATE TABLE relay_messages (
    id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at    BIGINT NOT NULL,
    body  TEXT   NOT NULL
);
CREATE INDEX relay_messages_by_age ON relay_messages(at);
