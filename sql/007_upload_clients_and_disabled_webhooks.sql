-- Who an upload counts against (SPEC §12): the API key's name, or the client's
-- address when no keys are set. Caps on unfinished uploads and their reserved
-- bytes are counted per client, in the transaction that inserts the upload.
-- NULL (rows written before this migration): counted against nobody.
ALTER TABLE uploads ADD COLUMN client TEXT;
CREATE INDEX uploads_by_client ON uploads (client) WHERE completed_at IS NULL;

-- Webhook URLs whose receiver answered 410 Gone: no more deliveries until the URL
-- is removed from webhook_urls and named again (Standard Webhooks' convention).
CREATE TABLE webhook_disabled_urls (
    url         TEXT PRIMARY KEY,
    disabled_at TEXT NOT NULL        -- ISO 8601, UTC
);
