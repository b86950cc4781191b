-- The audio codecs the last probe found, comma-separated ('' for none), so a
-- resize job knows whether to copy the audio without probing the source again.
-- NULL (rows stored before this migration): unknown, the job probes.
ALTER TABLE videos ADD COLUMN audio_codecs TEXT;
