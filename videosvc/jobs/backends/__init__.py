"""Where jobs run: the executor seam. A backend takes a `Job` (a resize or a ladder), gives a `ResizeResult`.

Two implementations: `local` (a process pool on this machine, the default) and
`dask` (a Dask cluster's workers, for when one machine is not enough). The
runner (jobs.runner) neither knows nor cares which one it has. Imports the
job contract and config, never the database or the web layer.
"""

from __future__ import annotations

from typing import Protocol

from ...config import Settings
from ..contract import Job, ResizeResult


class WorkerLost(Exception):
    """The worker went away while it held the job.

    `blamed`: the job was running on it, so this counts as one of its attempts; else it
    was caught in someone else's failure (another job's crash, a restart) and is retried free.
    """

    def __init__(self, reason: str, blamed: bool) -> None:
        super().__init__(reason)
        self.blamed = blamed


class BackendClosed(Exception):
    """The backend takes no more jobs (the service is stopping)."""


class Backend(Protocol):
    #: "local" or "dask", for the log.
    name: str
    #: Jobs that may run at once; None: as many as are queued (the cluster schedules them).
    slots: int | None

    async def start(self) -> None:
        """Be ready to run jobs (start the pool, connect to the cluster)."""

    async def run(self, job: Job) -> ResizeResult:
        """Run one job to its end; raises WorkerLost or BackendClosed."""

    async def request_stop(self, job: Job) -> None:
        """Ask the job to stop soon (its cancel file is already there; a cluster may need more)."""

    async def close(self) -> None:
        """Stop every job (they are requeued by the runner) and let go of the workers."""


#: The derived lane's workers run at this niceness, below the resize workers' 10.
DERIVED_NICENESS = 15


def make_backend(settings: Settings, server_id: str, derived: bool = False) -> Backend:
    """The backend of the resize lane, or (`derived`) of the derived lane (ladders)."""
    if settings.jobs.backend == "dask":
        from .dask import DaskBackend

        return DaskBackend(settings, server_id + ("-derived" if derived else ""))
    from .local import LocalBackend

    if derived:
        return LocalBackend(settings, settings.hls.derived_workers, DERIVED_NICENESS)
    return LocalBackend(settings)
