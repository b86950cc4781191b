-- Videos are stored as data_dir/videos/<id>.mp4; this table is their index.
CREATE TABLE videos (
    id          TEXT PRIMARY KEY,           -- canonical lowercase UUID
    filename    TEXT NOT NULL,              -- the client's name, display only, never a path
    size_bytes  INTEGER NOT NULL,
    width       INTEGER NOT NULL,           -- display size (rotation applied)
    height      INTEGER NOT NULL,
    duration_s  REAL,
    created_at  TEXT NOT NULL,              -- ISO 8601, UTC
    updated_at  TEXT NOT NULL
);

-- One row per resize request. 'queued' and 'running' are active; the newest
-- finished row of a video gives its processingSuccess.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id    TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,  -- times handed to a worker
    error       TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);

-- At most one active job per video: the database, not a lock, decides the 409.
CREATE UNIQUE INDEX jobs_one_active_per_video ON jobs (video_id)
    WHERE state IN ('queued', 'running');

CREATE INDEX jobs_by_video ON jobs (video_id, id);
