"""The command line, run as a user would: `python -m videosvc ...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "videosvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_check_reports_ffmpeg_and_resizes_a_sample(tmp_path: Path) -> None:
    result = _run("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ffmpeg version" in result.stdout
    assert "libx264 yes" in result.stdout
    assert "resize:   ok" in result.stdout


def test_run_fails_fast_with_one_line_when_ffmpeg_is_missing(tmp_path: Path) -> None:
    result = _run("run", "--port", "0", cwd=tmp_path, env={"VIDEOSVC_FFMPEG_PATH": "/nonexistent/ffmpeg"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "videosvc: ffmpeg_path '/nonexistent/ffmpeg' is not an executable"
    ]


def test_run_rejects_a_bad_config_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[http]\nport = 'x'\n")
    result = _run("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "videosvc: [http] port: expected int, got 'x'"
