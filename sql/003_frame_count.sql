-- Frames of the video stream, from the file's index at upload, so a PATCH can
-- bound the work it asks for (width x height x frames) without reading the file.
-- NULL (rows stored before this migration): counted at the first PATCH, then kept.
ALTER TABLE videos ADD COLUMN frame_count INTEGER;
