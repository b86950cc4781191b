"""Receiving uploads: the one receiver (multipart, raw and tus bytes), and resumable (tus) uploads.

`receiver` (bytes to a sink, within the limits and the disk budget),
`resumable` (the tus domain: create, append, terminate), `chunks` (a PATCH's
body appended), `writers` (one writer per upload: the takeover rules),
`holds` (the disk unfinished uploads hold), `sweeper` (expiry), `names`.

May import: aio, config, errors, media, signing, store.
"""
