-- Originals are kept (data_dir/originals/<id>.mp4): every resize encodes from
-- them. NULL: not recorded yet (rows written before this migration); the next
-- start takes the stored video as the original, as an upgrade should.
ALTER TABLE videos ADD COLUMN original_width INTEGER;
ALTER TABLE videos ADD COLUMN original_height INTEGER;
ALTER TABLE videos ADD COLUMN original_size_bytes INTEGER;
ALTER TABLE videos ADD COLUMN original_audio_codecs TEXT;

-- The catalogue pages newest first by (created_at, id).
CREATE INDEX videos_by_created ON videos (created_at, id);

-- Jobs gain 'cancelled' and a start time. SQLite cannot change a CHECK
-- constraint in place: the table is rebuilt, rows and ids kept.
CREATE TABLE jobs_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id    TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 0,  -- times handed to a worker
    error       TEXT,
    created_at  TEXT NOT NULL,               -- queued at
    started_at  TEXT,                        -- first handed to a worker
    finished_at TEXT
);
INSERT INTO jobs_new (id, video_id, width, height, state, attempts, error, created_at, finished_at)
    SELECT id, video_id, width, height, state, attempts, error, created_at, finished_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE UNIQUE INDEX jobs_one_active_per_video ON jobs (video_id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_by_video ON jobs (video_id, id);
