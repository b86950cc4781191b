"""The real service as a subprocess, for tests that crash it, signal it or restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m videosvc run` on a loopback port, with its log in a file."""

    def __init__(self, data_dir: Path, module: str = "videosvc", **settings: str | int | float) -> None:
        """`module`: what `python -m` runs (a test's own wrapper of the service, to inject a fault)."""
        self.data_dir = data_dir
        self.module = module
        self.port = free_port()
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            # This checkout first: the service (and a test's wrapper of it) as the tests see them.
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "VIDEOSVC_DATA_DIR": str(data_dir),
            "VIDEOSVC_PORT": str(self.port),
            "VIDEOSVC_WORKERS": "2",
            "VIDEOSVC_MIN_FREE_BYTES": "0",
            "VIDEOSVC_HLS_ENABLED": "false",  # as in conftest: only where a test asks for packages
            "VIDEOSVC_PICTURES_ENABLED": "false",  # or pictures
            **{f"VIDEOSVC_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        #: Run the server under these, e.g. ["prlimit", "--nofile=300:300", "--"].
        self.prefix: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        data_dir_parent = self.data_dir.parent
        data_dir_parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", self.module, "run"],
            cwd=data_dir_parent,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited at start:\n{self.log()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send `sig`; return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
