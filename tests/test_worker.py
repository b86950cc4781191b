"""The job function on its own: plain data in, plain data out, as any executor would run it."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from pathlib import Path

import pytest

from videosvc.jobs.contract import JobFiles, ResizeJob
from videosvc.jobs.worker import run_resize, verify_output
from videosvc.media.probe import Toolchain, probe
from videosvc.store.records import JobState

from .helpers import Samples


def _job(source: Path, folder: Path, tools: Toolchain, width: int, height: int) -> ResizeJob:
    return ResizeJob(
        source=str(source),
        source_audio_codecs=None,
        directory=str(folder),
        width=width,
        height=height,
        tools=tools,
        x264_preset="ultrafast",
        x264_crf=23,
        timeout_s=60,
        max_memory_bytes=2 * 1024**3,
    )


def test_success_leaves_a_verified_output_in_the_job_folder(
    samples: Samples, tools: Toolchain, tmp_path
) -> None:
    result = run_resize(_job(samples.video(), tmp_path / "job", tools, 96, 64))
    assert result.outcome is JobState.SUCCEEDED
    assert result.output == str(JobFiles(tmp_path / "job").output(1)) and result.attempt == 1
    assert result.info is not None and (result.info.width, result.info.height) == (96, 64)
    assert result.info.audio_codecs == ("aac",)


def test_an_ffmpeg_failure_reports_its_last_stderr_lines(
    samples: Samples, tools: Toolchain, tmp_path
) -> None:
    # The API refuses odd sizes; called directly, libx264 refuses them for real.
    result = run_resize(_job(samples.video(), tmp_path / "job", tools, 101, 64))
    assert result.outcome is JobState.FAILED
    assert result.error is not None
    assert result.error.startswith("ffmpeg exited with code")
    assert "divisible by 2" in result.error
    assert not JobFiles(tmp_path / "job").output(1).exists()


def test_a_cancel_file_stops_ffmpeg_mid_encode(samples: Samples, tools: Toolchain, tmp_path) -> None:
    files = JobFiles(tmp_path / "job")
    job = dataclasses.replace(
        _job(samples.video(1280, 720, duration_s=5), files.directory, tools, 1920, 1080),
        x264_preset="veryslow",
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_resize, job)
        for _ in range(600):
            if files.progress.exists():
                break
            time.sleep(0.05)
        assert not running.done()
        files.cancel.touch()
        result = running.result(timeout=10)
    assert result.outcome is JobState.CANCELLED
    assert not files.output(1).exists()


def test_a_cancel_file_stops_the_job_before_ffmpeg(samples: Samples, tools: Toolchain, tmp_path) -> None:
    files = JobFiles(tmp_path / "job")
    files.directory.mkdir()
    files.cancel.touch()
    result = run_resize(_job(samples.video(), files.directory, tools, 96, 64))
    assert result.outcome is JobState.CANCELLED
    assert not files.output(1).exists()


def test_each_execution_of_a_job_has_its_own_attempt_and_output(
    samples: Samples, tools: Toolchain, tmp_path
) -> None:
    """Two executions (a worker thought dead, and its replacement) never write the same file; a job
    that a cluster reran too often gives up."""
    job = dataclasses.replace(_job(samples.video(), tmp_path / "job", tools, 96, 64), max_attempts=2)
    first, second, third = (run_resize(job) for _ in range(3))
    assert (first.attempt, second.attempt, third.attempt) == (1, 2, 3)
    assert first.output != second.output and first.outcome is second.outcome is JobState.SUCCEEDED
    assert third.outcome is JobState.FAILED and "died 2 time(s)" in (third.error or "")


def test_an_executors_stop_check_stops_ffmpeg(samples: Samples, tools: Toolchain, tmp_path) -> None:
    files = JobFiles(tmp_path / "job")
    job = dataclasses.replace(
        _job(samples.video(1280, 720, duration_s=5), files.directory, tools, 1920, 1080),
        x264_preset="veryslow",
    )
    started = time.monotonic()
    result = run_resize(job, should_stop=lambda: "lease lost" if time.monotonic() - started > 1 else None)
    assert result.outcome is JobState.CANCELLED and result.error == "lease lost"
    assert not files.output(1).exists()


def _verify_job(folder: Path, tools: Toolchain, width: int, height: int) -> ResizeJob:
    return _job(folder / "unused.mp4", folder, tools, width, height)


def test_the_output_is_verified_from_its_own_index_like_ffprobe_would(
    samples: Samples, tools: Toolchain, tmp_path: Path
) -> None:
    made = samples.video(96, 64, duration_s=2)
    copy = tmp_path / "out.mp4"
    copy.write_bytes(made.read_bytes())
    result = verify_output(_verify_job(tmp_path, tools, 96, 64), copy, ("aac",), time.monotonic())
    assert result.outcome is JobState.SUCCEEDED and result.info is not None
    probed = probe(str(made), tools)  # the same questions, asked of ffprobe
    assert (result.info.width, result.info.height) == (probed.width, probed.height)
    assert result.info.frame_count == probed.frame_count == 50
    assert result.info.duration_s == pytest.approx(probed.duration_s, abs=0.05)
    assert len(result.info.audio_codecs) == len(probed.audio_codecs) == 1


@pytest.mark.parametrize(
    ("size", "audio", "cut", "error"),
    [
        ((80, 64), ("aac",), False, "the output is 96x64, not 80x64"),
        ((96, 64), ("aac", "aac"), False, "the output lost the audio track"),
        ((96, 64), ("aac",), True, "the output cannot be read"),
    ],
    ids=["wrong-size", "lost-audio", "truncated"],
)
def test_an_output_that_is_not_what_was_asked_fails_and_is_removed(
    samples: Samples, tools: Toolchain, tmp_path: Path, size: tuple[int, int], audio: tuple[str, ...],
    cut: bool, error: str,
) -> None:  # fmt: skip
    data = samples.video(96, 64, duration_s=2).read_bytes()
    output = tmp_path / "out.mp4"
    output.write_bytes(data[: len(data) - 100] if cut else data)
    result = verify_output(_verify_job(tmp_path, tools, *size), output, audio, time.monotonic())
    assert result.outcome is JobState.FAILED
    assert result.error is not None and result.error.startswith(error), result.error
    assert not output.exists()


def test_a_video_only_output_is_verified(samples: Samples, tools: Toolchain, tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    output.write_bytes(samples.video(96, 64, audio=False).read_bytes())
    result = verify_output(_verify_job(tmp_path, tools, 96, 64), output, (), time.monotonic())
    assert result.outcome is JobState.SUCCEEDED and result.info is not None
    assert result.info.audio_codecs == ()


def test_an_output_that_is_not_h264_fails(samples: Samples, tools: Toolchain, tmp_path: Path) -> None:
    made = samples.make(
        "mpeg4_96x64.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=1", "-c:v", "mpeg4"],
    )
    output = tmp_path / "out.mp4"
    output.write_bytes(made.read_bytes())
    result = verify_output(_verify_job(tmp_path, tools, 96, 64), output, (), time.monotonic())
    assert result.outcome is JobState.FAILED and result.error == "the output's video is mp4v, not H.264"
    assert not output.exists()
