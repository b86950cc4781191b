"""The command line, run as a user would: `python -m videosvc ...`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from videosvc.media.probe import probe


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


def test_sample_makes_a_video_the_service_takes(tmp_path: Path, tools) -> None:
    result = _run("sample", "cat.mp4", "--seconds", "1", "--size", "320x240", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = probe(str(tmp_path / "cat.mp4"), tools)
    assert (info.width, info.height, info.audio_codecs) == (320, 240, ("aac",))


def test_the_missing_ffmpeg_hint_names_an_install_that_exists(tmp_path: Path) -> None:
    """A machine with neither an ffmpeg on PATH nor the imageio-ffmpeg package: one line that says
    what to install, and not 'videosvc[ffmpeg]' (no such package on an index, and open to squatting)."""
    absent = tmp_path / "no-imageio"
    (absent / "imageio_ffmpeg").mkdir(parents=True)
    (absent / "imageio_ffmpeg" / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = _run("check", cwd=tmp_path, env={"PATH": str(tmp_path), "PYTHONPATH": str(absent)})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "videosvc[ffmpeg]" not in line
    assert "pip install '.[ffmpeg]'" in line and "apt-get install ffmpeg" in line


def test_run_says_where_its_data_and_settings_are_and_where_to_look(tmp_path: Path) -> None:
    """A new user needs to know which folder and which config file it took, and what to open."""
    (tmp_path / "config.toml").write_text("[http]\nport = 0\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "videosvc", "run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "swagger" in line:
                break
    finally:
        process.terminate()
        process.communicate(timeout=30)
    text = "".join(lines)
    assert str((tmp_path / "data").resolve()) in text
    assert str((tmp_path / "config.toml").resolve()) in text
    assert re.search(r"http://127\.0\.0\.1:\d+/ ", text) and re.search(
        r"http://127\.0\.0\.1:\d+/swagger", text
    )
