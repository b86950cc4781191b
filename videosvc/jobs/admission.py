"""Admission: how many jobs may be queued or running, overall and for one API key (429 past it)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from ..config import JobSettings
from ..errors import TooManyJobs

#: What a 429 for a full job queue tells the client to wait before asking again.
JOBS_RETRY_AFTER_S = 5


class Admission:
    """The jobs accepted and not ended, by client; counted synchronously, so PATCHes racing through
    their awaits cannot overfill the queue together."""

    def __init__(self, settings: JobSettings) -> None:
        self._settings = settings
        #: The client (API key name) of each accepted job.
        self._clients: dict[int, str | None] = {}
        #: Places granted whose job is not yet accepted (a PATCH between its check and its job).
        self._admitted: Counter[str | None] = Counter()

    @contextlib.contextmanager
    def place(self, client: str | None) -> Iterator[None]:
        """Hold a place while a job is being created; raises TooManyJobs when the queue is full."""
        limits = self._settings
        if len(self._clients) + self._admitted.total() >= limits.max_queued_jobs:
            raise TooManyJobs(
                f"{limits.max_queued_jobs} jobs are queued or running (max_queued_jobs); retry later",
                JOBS_RETRY_AFTER_S,
            )
        if client is not None:
            mine = sum(1 for owner in self._clients.values() if owner == client) + self._admitted[client]
            if mine >= limits.max_queued_jobs_per_key:
                raise TooManyJobs(
                    f"this API key has {mine} jobs queued or running (max_queued_jobs_per_key); retry later",
                    JOBS_RETRY_AFTER_S,
                )
        self._admitted[client] += 1
        try:
            yield
        finally:
            self._admitted[client] -= 1

    def accepted(self, job_id: int, client: str | None) -> None:
        self._clients[job_id] = client

    def ended(self, job_id: int) -> None:
        self._clients.pop(job_id, None)
