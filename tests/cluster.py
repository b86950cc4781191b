"""A real Dask cluster on loopback: `dask scheduler` and `dask worker` as processes of their own.

Not an in-process LocalCluster, which would hide pickling and import
problems: the workers import videosvc as a remote machine would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .server import free_port

START_TIMEOUT_S = 60.0
DASK = str(Path(sys.executable).with_name("dask"))


class DaskCluster:
    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.worker_count = workers
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, args: list[str], prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        process = subprocess.Popen(
            [*(prefix or []), DASK, *args], stdout=log, stderr=log, env=env, start_new_session=True
        )
        log.close()
        return process

    def start(self) -> DaskCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start_scheduler()
        for index in range(self.worker_count):
            self.add_worker(f"w{index}")
        self.wait_for_workers(self.worker_count)
        return self

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        )

    def add_worker(self, name: str, prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        worker = self._spawn(
            f"worker-{name}",
            ["worker", self.address, "--name", name, "--nthreads", "1", "--nworkers", "1",
             "--memory-limit", "0", "--no-dashboard", "--host", "127.0.0.1",
             "--local-directory", str(self.folder / f"space-{name}"), "--death-timeout", "60"],
            prefix,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout=5) as client:
                    client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                    return
            except (OSError, TimeoutError):
                time.sleep(0.2)
        raise AssertionError(f"the Dask cluster did not get {count} workers:\n{self.logs()}")

    def logs(self) -> str:
        logs = sorted(self.folder.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

    def stop(self) -> None:
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
