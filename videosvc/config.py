"""Settings: a frozen dataclass tree, loaded once at start-up.

Precedence, lowest first: defaults below, the TOML file, `VIDEOSVC_<SETTING>`
environment variables, then command-line flags. Every setting is documented
in the repository's `config.toml`; a test holds the two together.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "VIDEOSVC_"

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


class ConfigError(Exception):
    """A setting is missing, unknown or out of range."""


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer tokens; when any are set, every /file route requires one.
    api_keys: tuple[str, ...] = ()
    max_upload_bytes: int = 4 * 1024**3
    max_json_bytes: int = 16 * 1024
    #: An upload that sends nothing for this long is cut off.
    upload_idle_timeout_s: float = 60.0
    #: How long SIGTERM waits for in-flight requests before closing.
    shutdown_grace_s: float = 10.0


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = Path("data")
    #: Uploads are refused (507) when they would leave less than this free.
    min_free_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class JobSettings:
    #: Worker processes; 0 means one per CPU.
    workers: int = 0
    job_timeout_s: float = 3600.0
    job_max_attempts: int = 3
    max_dimension: int = 8192


@dataclass(frozen=True)
class FfmpegSettings:
    #: Empty: `ffmpeg` on PATH, then the binary of the imageio-ffmpeg package.
    ffmpeg_path: str = ""
    #: Empty: `ffprobe` on PATH or beside ffmpeg, else probing parses `ffmpeg -i`.
    ffprobe_path: str = ""
    x264_preset: str = "veryfast"
    x264_crf: int = 21


@dataclass(frozen=True)
class LogSettings:
    log_level: str = "INFO"
    log_format: str = "text"


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    ffmpeg: FfmpegSettings = field(default_factory=FfmpegSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def worker_count(self) -> int:
        return self.jobs.workers or os.cpu_count() or 1


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
    settings = Settings(**built)
    validate(settings)
    return settings


def _coerce(value: Any, kind: Any, source: str) -> Any:
    """Turn a TOML value or an env string into the setting's type."""
    try:
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
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
            return tuple(str(item).strip() for item in items if str(item).strip())
    except (TypeError, ValueError):
        pass
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"{source}: expected {name}, got {value!r}")


def validate(settings: Settings) -> None:
    checks: list[tuple[bool, str]] = [
        (0 <= settings.http.port < 65536, "port must be between 0 and 65535"),
        (settings.http.max_upload_bytes > 0, "max_upload_bytes must be positive"),
        (settings.http.max_json_bytes >= 64, "max_json_bytes must be at least 64"),
        (settings.http.upload_idle_timeout_s > 0, "upload_idle_timeout_s must be positive"),
        (settings.http.shutdown_grace_s >= 0, "shutdown_grace_s must not be negative"),
        (settings.storage.min_free_bytes >= 0, "min_free_bytes must not be negative"),
        (settings.jobs.workers >= 0, "workers must be 0 (one per CPU) or more"),
        (settings.jobs.job_timeout_s > 0, "job_timeout_s must be positive"),
        (settings.jobs.job_max_attempts >= 1, "job_max_attempts must be at least 1"),
        (settings.jobs.max_dimension >= 22, "max_dimension must be at least 22"),
        (
            settings.ffmpeg.x264_preset in X264_PRESETS,
            f"x264_preset must be one of {', '.join(X264_PRESETS)}",
        ),
        (0 <= settings.ffmpeg.x264_crf <= 51, "x264_crf must be between 0 and 51"),
        (settings.log.log_format in LOG_FORMATS, "log_format must be 'text' or 'json'"),
        (
            isinstance(logging.getLevelName(settings.log.log_level.upper()), int),
            "log_level must be DEBUG, INFO, WARNING or ERROR",
        ),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems))
