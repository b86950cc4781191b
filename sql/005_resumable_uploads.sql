-- Resumable (tus) uploads in progress. Their bytes are data_dir/uploads/<id>.part;
-- the offset is that file's size, so it never counts a byte that is not on disk.
-- The id becomes the video's id once the last byte is in and the file is stored.
CREATE TABLE uploads (
    id           TEXT PRIMARY KEY,      -- canonical lowercase UUID
    length       INTEGER NOT NULL,      -- Upload-Length
    filename     TEXT NOT NULL,         -- from Upload-Metadata, cleaned ('' when none)
    metadata     TEXT NOT NULL,         -- the Upload-Metadata header as sent, echoed by HEAD
    owner        TEXT,                  -- the API key that created it, if keys are set
    created_at   TEXT NOT NULL,         -- ISO 8601, UTC
    expires_at   REAL NOT NULL,         -- Unix time; extended by each PATCH
    completed_at TEXT                   -- set when it became a stored video
);

CREATE INDEX uploads_by_expiry ON uploads (expires_at);
