-- The HLS package of each video (SPEC §13): its renditions as JSON, a list of
-- {"name", "width", "height", "bandwidth", "state", "error"}, largest first.
-- NULL: no package planned (hls_enabled was off, or the row is older than this).
ALTER TABLE videos ADD COLUMN renditions TEXT;
