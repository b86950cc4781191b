"""The use cases of a video: publish, view, catalogue, resize, delete, and recovery at start.

`VideoService` (videos/service.py) is the facade the web layer calls.

May import: aio, config, errors, events, hooks, jobs, media, signing, store, uploads.
"""
