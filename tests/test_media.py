"""Probing: ffprobe and the `ffmpeg -i` fallback agree on every sample."""

from __future__ import annotations

import pytest

from videosvc.media.isobmff import has_ftyp_header
from videosvc.media.probe import ProbeError, Toolchain, probe

from .helpers import Samples


def _samples(samples: Samples) -> dict[str, object]:
    return {
        "av": samples.video(320, 240),
        "silent": samples.video(160, 120, audio=False),
        "odd": samples.video(321, 243, pix_fmt="yuv444p"),
        "short": samples.video(160, 120, duration_s=0.04),
        "rotated": samples.rotated(90),
    }


def test_ffprobe_and_ffmpeg_fallback_agree(samples: Samples, tools: Toolchain) -> None:
    if tools.ffprobe is None:
        pytest.skip("no ffprobe on this machine: only the fallback can run")
    without_ffprobe = Toolchain(ffmpeg=tools.ffmpeg)
    for name, path in _samples(samples).items():
        a = probe(str(path), tools)
        b = probe(str(path), without_ffprobe)
        assert (a.width, a.height, a.rotation, a.audio_codecs, a.video_codec) == (
            b.width, b.height, b.rotation, b.audio_codecs, b.video_codec,
        ), name  # fmt: skip
        assert a.is_mp4_family and b.is_mp4_family
        assert a.duration_s == pytest.approx(b.duration_s, abs=0.02)


def test_probe_reports_display_size_of_rotated_video(samples: Samples, tools: Toolchain) -> None:
    info = probe(str(samples.rotated(90)), tools)
    assert (info.width, info.height) == (240, 320)
    assert abs(info.rotation) == 90


@pytest.mark.parametrize("use_ffprobe", [True, False])
def test_probe_rejects_audio_only_and_garbage(
    samples: Samples, tools: Toolchain, tmp_path, use_ffprobe
) -> None:
    chain = tools if use_ffprobe else Toolchain(ffmpeg=tools.ffmpeg)
    with pytest.raises(ProbeError, match="no video stream"):
        probe(str(samples.audio_only()), chain)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    with pytest.raises(ProbeError):
        probe(str(garbage), chain)


def test_ftyp_header() -> None:
    assert has_ftyp_header(b"\x00\x00\x00\x20ftypisom")
    assert not has_ftyp_header(b"\x1aE\xdf\xa3matroska")
    assert not has_ftyp_header(b"ftyp")
