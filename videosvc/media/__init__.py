"""Reading and checking media files, and finding ffmpeg. Imports nothing else of videosvc but config."""
