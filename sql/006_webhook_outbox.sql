-- Webhook deliveries to make: written in the same transaction as the change
-- they report (a transactional outbox), removed once delivered or given up.
CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,        -- webhook-id: the same for every attempt and every URL
    url             TEXT NOT NULL,
    event_type      TEXT NOT NULL,        -- video.stored, video.deleted, job.succeeded, job.failed
    payload         TEXT NOT NULL,        -- JSON {"type", "timestamp", "data"}, signed as is
    created_at      REAL NOT NULL,        -- Unix time of the change
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at);
