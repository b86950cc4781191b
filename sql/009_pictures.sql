-- The poster and storyboard of each video (SPEC §14), as JSON:
-- {"state", "error", "poster_time"}. NULL: none planned (pictures_enabled was
-- off, or the row is older than this).
ALTER TABLE videos ADD COLUMN pictures TEXT;
