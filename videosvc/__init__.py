"""videosvc: store MP4 videos over HTTP and resize them with ffmpeg in the background."""

__version__ = "0.1.0"
