"""Recorder layouts: every recorder container is found, in sub-folders too, in natural order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import pytest

from endoshare.cases import discover_case
from endoshare.detect.run import detect_video
from endoshare.pipeline import CaseRequest, ProcessOptions, probe_case, process_case
from media import ffmpeg, process_spans
from test_detect_video import DEFAULT_MARGIN_FRAMES, RedTissueDetector

#: How a recorder writes each container (FFmpeg arguments after the test pattern input).
FORMATS = {
    ".vob": ("-c:v", "mpeg2video", "-s", "320x240", "-f", "vob"),
    ".mxf": ("-c:v", "mpeg2video", "-s", "720x576", "-b:v", "8M", "-f", "mxf"),
    ".dv": ("-c:v", "dvvideo", "-s", "720x576", "-pix_fmt", "yuv420p", "-f", "dv"),
    ".wmv": ("-c:v", "wmv2", "-s", "320x240", "-f", "asf"),
    ".m2ts": ("-c:v", "libx264", "-s", "320x240", "-pix_fmt", "yuv420p", "-f", "mpegts"),
    ".MTS": ("-c:v", "libx264", "-s", "320x240", "-pix_fmt", "yuv420p", "-f", "mpegts"),
}


def recording(path: Path, seconds: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", f"testsrc=rate=25:duration={seconds}", *FORMATS.get(path.suffix, FORMATS[".vob"]),
           path)
    return path


def test_sub_folders_are_searched_in_natural_order(tmp_path: Path) -> None:
    case = tmp_path / "case"
    names = ["DAY1/VID10.MTS", "DAY1/VID2.MTS", "DAY2/VID1.mts", "VTS_01_1.VOB", "VTS_01_2.VOB",
             "PRIVATE/AVCHD/BDMV/STREAM/00001.MTS", "cam.dv", "room.wmv", "x.mxf", "y.m2ts",
             ".hidden/VID0.mp4", "__MACOSX/VID0.mp4", "notes.txt"]
    for name in names:
        (case / name).parent.mkdir(parents=True, exist_ok=True)
        (case / name).write_bytes(b"x")
    found = [p.relative_to(case).as_posix() for p in discover_case(case).clips]
    assert found == ["cam.dv", "DAY1/VID2.MTS", "DAY1/VID10.MTS", "DAY2/VID1.mts",
                     "PRIVATE/AVCHD/BDMV/STREAM/00001.MTS", "room.wmv", "VTS_01_1.VOB", "VTS_01_2.VOB", "x.mxf",
                     "y.m2ts"]


def test_equal_names_are_ordered_by_recording_time(tmp_path: Path) -> None:
    case = tmp_path / "case"
    late = recording(case / "clip.VOB")
    early = recording(case / "clip.vob")
    os.utime(late, (2_000_000_000, 2_000_000_000))
    os.utime(early, (1_000_000_000, 1_000_000_000))
    assert [i.path for i in probe_case(discover_case(case))] == [early, late]


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_each_recorder_format_is_processed(tmp_path: Path, suffix: str) -> None:
    case = tmp_path / "case"
    recording(case / "sub" / f"part1{suffix}")
    recording(case / "sub" / f"part2{suffix}")
    result = process_case(CaseRequest(case), ProcessOptions(out_dir=tmp_path / "shared",
                                                            archive_dir=tmp_path / "archive", detector="none"))
    report = json.loads(result.report.read_text())
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    with av.open(str(result.output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 50


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_detection_reads_each_recorder_formats_frame_rate(tmp_path: Path, suffix: str) -> None:
    """One second out of body (black), then three in body (red): the span ends one second in, plus the
    default margin.  FFmpeg's DV demuxer reports 60000 fps; detection once took it, and its margin and gap
    filling in seconds then covered the whole clip."""
    path = tmp_path / f"clip{suffix}"
    size = "720x576" if suffix in (".dv", ".mxf") else "320x240"
    ffmpeg("-f", "lavfi", "-i", f"color=c=black:s={size}:r=25:d=1", "-f", "lavfi", "-i",
           f"color=c=red:s={size}:r=25:d=3", "-filter_complex", "[0][1]concat=n=2:v=1[v]", "-map", "[v]",
           *[a for a in FORMATS[suffix] if a not in ("-s", "320x240", "720x576")], path)
    result = detect_video(path, RedTissueDetector())
    assert result.frame_rate == 25
    [span] = result.segments
    end = 25 + DEFAULT_MARGIN_FRAMES
    assert span.start_frame == 0 and end <= span.end_frame <= end + 2, (suffix, result.segments)


@pytest.mark.parametrize("spans", [(), ((30, 40),)])
def test_an_open_gop_recording_is_copied_with_its_keyframes(tmp_path: Path, spans: tuple[tuple[int, int], ...]) -> None:
    """Open GOPs (camcorders, broadcast encoders): non-IDR I pictures marked as keyframes by their recovery
    point.  Fast mode used to drop that SEI with the others, the MP4 muxer then no longer listed those
    pictures as sync samples, and the copied-packet check failed the case."""
    clip = tmp_path / "case" / "clip.mp4"
    clip.parent.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:duration=4:size=320x240", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-x264-params", "open_gop=1:keyint=25:min-keyint=25:scenecut=0", "-bf", "3", clip)
    with av.open(str(clip)) as container:
        source_keys = sum(p.is_keyframe for p in container.demux(video=0) if p.size)
    assert source_keys == 4
    result, report = process_spans(clip.parent, tmp_path, spans)
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    with av.open(str(result.output)) as container:
        output_keys = sum(p.is_keyframe for p in container.demux(video=0) if p.size)
    assert report["output"]["method"] != "re-encode"
    if not spans:
        assert output_keys == source_keys
