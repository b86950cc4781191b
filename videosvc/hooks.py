"""Faults a test injects into a real server: passed to `create_app`, never set in production."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: Something to await at a chosen moment: a pause a crash test kills the server in.
Pause = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Hooks:
    #: Between replacing a video with a job's output and recording the job.
    before_record: Pause | None = None
    #: Before a video's ladder job is handed to the derived lane (its copied rendition, if any, ready).
    before_ladder: Pause | None = None
