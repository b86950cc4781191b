"""Reading and checking media files (boxes, probes, magic numbers), and finding ffmpeg.

May import: config.
"""
