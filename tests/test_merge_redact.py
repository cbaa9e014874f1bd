"""Merging keeps every frame in order; each redaction style touches exactly the given frames."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import options
from endoshare.media.frames import detail_energy
from endoshare.pipeline import CaseRequest, process_case
from endoshare.render.common import EncodeSettings, Redaction
from media import barcode_clip, decoded_frames, luma_max, read_barcode


def segments_file(tmp_path: Path, spans: list[tuple[int, int]]) -> Path:
    path = tmp_path / "segments.json"
    path.write_text(json.dumps({"segments": [{"start_frame": a, "end_frame": b} for a, b in spans]}))
    return path


def test_compatible_clips_are_copied_with_every_frame_in_order(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    # Natural order: clip2 before clip10, although "clip10" < "clip2" as plain text.
    barcode_clip(case / "clip10.mp4", range(60, 100))
    barcode_clip(case / "clip2.mp4", range(0, 60))
    result = process_case(CaseRequest(case), options(tmp_path))
    report = json.loads(result.report.read_text())
    assert report["output"]["method"] == "stream-copy"
    frames = decoded_frames(result.output)
    assert [read_barcode(f) for f in frames] == list(range(100))
    assert report["output"]["frames"] == 100


def test_incompatible_clips_are_normalised_not_dropped(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    barcode_clip(case / "a1.mp4", range(0, 50))
    barcode_clip(case / "a2.mp4", range(50, 80), width=640, height=360)          # other size
    barcode_clip(case / "a3.mp4", range(80, 110), rate=Fraction(50))             # other frame rate
    result = process_case(CaseRequest(case), options(tmp_path))
    report = json.loads(result.report.read_text())
    assert report["output"]["method"] == "re-encode"
    reasons = " ".join(report["merged_timeline"]["normalised_because"])
    assert "resolution" in reasons and "frame rate" in reasons
    frames = decoded_frames(result.output)
    assert all((f.width, f.height) == (320, 180) for f in frames)
    # 50 + 30 frames at 25 fps, then 30 frames at 50 fps become 15 frames at 25 fps (every second one).
    codes = [read_barcode(f) for f in frames]
    assert codes[:80] == list(range(80))
    assert codes[80:] == list(range(80, 110, 2))
    assert report["merged_timeline"]["frames"] == len(frames) == 95


def test_other_aspect_ratio_is_letterboxed(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    barcode_clip(case / "b1.mp4", range(0, 10))
    barcode_clip(case / "b2.mp4", range(10, 20), width=192, height=192)
    result = process_case(CaseRequest(case), options(tmp_path))
    frames = decoded_frames(result.output)
    assert len(frames) == 20
    square = frames[15].to_ndarray(format="rgb24")
    # 192x192 fits 180x180 in the middle of 320x180: black bars of 70 pixels on each side.
    assert square[:, :64].max() < 30 and square[:, -64:].max() < 30
    assert square[:, 80:240].mean() > 60


SPANS = [(0, 5), (23, 24), (30, 55), (95, 100)]   # first frame, one frame, across the clip boundary, last frame
REDACTED = {i for a, b in SPANS for i in range(a, b)}


@pytest.fixture
def two_clip_case(tmp_path: Path) -> Path:
    case = tmp_path / "case"
    case.mkdir()
    barcode_clip(case / "part1.mp4", range(0, 50))
    barcode_clip(case / "part2.mp4", range(50, 100))
    return case


@pytest.mark.parametrize("mode", ["fast", "advanced"])
def test_black_redacts_exactly_the_given_frames(tmp_path: Path, two_clip_case: Path, mode: str) -> None:
    result = process_case(CaseRequest(two_clip_case),
                          options(tmp_path, mode=mode, segments_file=segments_file(tmp_path, SPANS)))
    frames = decoded_frames(result.output)
    assert len(frames) == 100
    for index, frame in enumerate(frames):
        if index in REDACTED:
            assert luma_max(frame) <= 20, index
        else:
            assert read_barcode(frame) == index


def test_blur_redacts_exactly_the_given_frames(tmp_path: Path, two_clip_case: Path) -> None:
    result = process_case(CaseRequest(two_clip_case),
                          options(tmp_path, redaction=Redaction.BLUR, segments_file=segments_file(tmp_path, SPANS)))
    frames = decoded_frames(result.output)
    assert len(frames) == 100
    sharp = detail_energy(frames[10])
    for index, frame in enumerate(frames):
        if index in REDACTED:
            assert detail_energy(frame) < 0.25 * sharp, index
        else:
            assert read_barcode(frame) == index


def test_cut_drops_exactly_the_given_frames(tmp_path: Path, two_clip_case: Path) -> None:
    result = process_case(CaseRequest(two_clip_case),
                          options(tmp_path, redaction=Redaction.CUT, segments_file=segments_file(tmp_path, SPANS)))
    codes = [read_barcode(f) for f in decoded_frames(result.output)]
    assert codes == [i for i in range(100) if i not in REDACTED]
    report = json.loads(result.report.read_text())
    assert report["output"]["frames"] == 100 - len(REDACTED)


def test_advanced_options_change_codec_size_and_rate(tmp_path: Path, two_clip_case: Path) -> None:
    settings = EncodeSettings(codec="hevc", crf=30, preset="ultrafast", frame_rate=Fraction(50, 4), height=90)
    result = process_case(CaseRequest(two_clip_case),
                          options(tmp_path, mode="advanced", encode=settings,
                                  segments_file=segments_file(tmp_path, [(30, 55)])))
    report = json.loads(result.report.read_text())
    assert report["output"]["codec"] == "hevc"
    assert (report["output"]["width"], report["output"]["height"]) == (160, 90)
    assert report["output"]["frame_rate"] == "25/2"
    frames = decoded_frames(result.output)
    assert len(frames) == 50                                # every second frame of 100
    for output_index, frame in enumerate(frames):
        if 30 <= output_index * 2 < 55:
            assert luma_max(frame) <= 20
    assert all(check["passed"] for check in report["checks"])


def test_av1_output_verifies(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    barcode_clip(case / "c.mp4", range(20))
    result = process_case(CaseRequest(case), options(tmp_path, mode="advanced",
                                                     encode=EncodeSettings(codec="av1", preset="ultrafast")))
    report = json.loads(result.report.read_text())
    assert report["output"]["codec"] == "av1"
    assert [read_barcode(f) for f in decoded_frames(result.output)] == list(range(20))
