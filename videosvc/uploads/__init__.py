"""Receiving uploads: the one receiver (multipart, raw, tus), and resumable (tus) uploads."""
