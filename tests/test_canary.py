"""A unique string planted everywhere identifiers hide must not survive into anything we share.

The bitstream carries it too: in SEI, and in NAL units a decoder skips (H.264 filler, reserved,
unspecified and data-partition units; HEVC filler, reserved, unspecified units and a layer-1 slice),
in every sample and in the avcC/hvcC record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endoshare.media.findings import find_removable
from endoshare.media.probe import probe
from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.render.common import Redaction
from media import barcode_clip, ffmpeg
from nal_media import h264_unit, hevc_sei, inject_units, planted_units, record_holds, strict_decode

CANARY = "ZQXCANARY7731"
ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def planted_bitstream(work: Path, codec: str, annexb: bool = False) -> Path:
    """An MP4 clip whose bitstream carries CANARY in SEI user data and in NAL units a decoder skips,
    in every sample and in its avcC/hvcC record."""
    plain = barcode_clip(work / f"plain-{codec}.mp4", range(50), codec=ENCODERS[codec], planted=CANARY,
                         options={"x265-params": "log-level=error"} if codec == "hevc" else None)
    # FFmpeg's MP4 muxer keeps an SEI array in an hvcC, but no other non-parameter-set unit.
    record_unit = h264_unit(12, CANARY.encode()) if codec == "h264" else hevc_sei(CANARY.encode())
    units = planted_units(codec, CANARY.encode(), data_partition=not annexb)
    return inject_units(plain, work / f"planted-{codec}.mp4", units, record_unit)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_planted_units_are_valid_input(tmp_path: Path, codec: str) -> None:
    """The decoder ignores the planted units (same pictures, no error): the input is a valid clip."""
    planted = planted_bitstream(tmp_path, codec)
    plain = tmp_path / f"plain-{codec}.mp4"
    assert record_holds(planted, h264_unit(12, CANARY.encode()) if codec == "h264" else hevc_sei(CANARY.encode()))
    before, after = strict_decode(plain), strict_decode(planted)
    assert len(before) == len(after) == 50
    assert all((a == b).all() for a, b in zip(before, after, strict=True))


def planted_clip(folder: Path, container: str, work: Path, codec: str = "h264") -> Path:
    """A clip carrying CANARY in tags, handler name, SEI user data and other skipped NAL units,
    subtitles, chapters, attachments, an audio track's tags and its own file name (whatever the
    container can hold)."""
    work.mkdir(parents=True, exist_ok=True)
    base = planted_bitstream(work, codec, annexb=container == "ts")
    subtitles = work / "subs.srt"
    subtitles.write_text(f"1\n00:00:00,000 --> 00:00:01,500\nPatient {CANARY}\n", encoding="utf-8")
    chapters = work / "chapters.txt"
    chapters.write_text(f";FFMETADATA1\ntitle={CANARY}\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\n"
                        f"title=Chapter {CANARY}\n", encoding="utf-8")
    attachment = work / f"{CANARY}-notes.txt"
    attachment.write_text(f"Operator notes for {CANARY}\n", encoding="utf-8")
    out = folder / f"{CANARY} clip 1.{container}"
    args: list[str | Path] = ["-i", base, "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                              "-i", chapters]
    with_subs = container in ("mp4", "mov", "mkv")
    if with_subs:
        args += ["-i", subtitles]
    args += ["-map", "0:v", "-map", "1:a", "-map_metadata", "2", "-map_chapters", "2"]
    if with_subs:
        args += ["-map", "3:s"]
    args += ["-c:v", "copy", "-c:a", "aac",
             "-metadata", f"comment=Patient {CANARY}", "-metadata", f"artist={CANARY}",
             "-metadata:s:v:0", f"handler_name={CANARY}", "-metadata:s:v:0", f"title={CANARY}",
             "-metadata:s:a:0", f"title={CANARY}", "-metadata:s:a:0", f"handler_name={CANARY}"]
    if with_subs:
        args += ["-c:s", "mov_text" if container in ("mp4", "mov") else "srt",
                 "-metadata:s:s:0", f"title={CANARY}"]
    if container in ("mp4", "mov"):
        args += ["-timecode", "01:02:03:04"]
    if container == "ts":
        args += ["-metadata", f"service_name={CANARY}", "-metadata", f"service_provider={CANARY}"]
    if container == "mkv":
        args += ["-attach", attachment, "-metadata:s:t:0", "mimetype=text/plain"]
    ffmpeg(*args, out)
    return out


@pytest.mark.parametrize("codec, container", [("h264", "mp4"), ("h264", "mov"), ("h264", "mkv"), ("h264", "ts"),
                                              ("hevc", "mp4"), ("hevc", "mkv"), ("hevc", "ts")])
@pytest.mark.parametrize("render", ["copy", "smart", "advanced"])
def test_canary_survives_nowhere(tmp_path: Path, codec: str, container: str, render: str) -> None:
    redact = render != "copy"
    case = tmp_path / f"case {CANARY}"
    case.mkdir()
    clip = planted_clip(case, container, tmp_path / "work", codec)
    before = probe(clip)
    # The planted input really carries the canary where we say (else the test proves nothing).
    assert CANARY.encode() in clip.read_bytes()
    assert any(CANARY in sei.text for sei in before.sei_user_data)
    if container != "ts":
        assert any(CANARY in v for _, v in before.tags)
        assert any(s.kind == "subtitle" for s in before.streams)
        assert before.chapters
    if container == "mkv":
        assert any(s.kind == "attachment" for s in before.streams)
    # inspect shows the planted bitstream units (and the subtitles, the TS service name) in the input.
    removable = find_removable(clip)
    assert any(f.kind == "nal_units" and CANARY in f.preview for f in removable)
    if container == "ts":
        assert any(f.kind == "mpegts_service" and CANARY in f.preview for f in removable)
    elif container in ("mp4", "mov", "mkv"):
        assert any(f.kind == "subtitle_text" and CANARY in f.preview for f in removable)

    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive",
                             redaction=Redaction.BLACK, detector="none")
    if redact:
        segments = tmp_path / "segments.json"
        segments.write_text(json.dumps({"segments": [{"start_frame": 10, "end_frame": 20}]}))
        options = ProcessOptions(out_dir=options.out_dir, archive_dir=options.archive_dir,
                                 segments_file=segments, mode="fast" if render == "smart" else "advanced")
    result = process_case(CaseRequest(case), options)

    assert result.status == "ok" and result.output is not None and result.report is not None
    shared = sorted((tmp_path / "shared").iterdir())
    assert shared == sorted([result.output, result.report])
    for path in shared:
        assert CANARY not in path.name
        assert CANARY.encode() not in path.read_bytes(), f"canary found in {path.name}"
    after = probe(result.output)
    assert [s.kind for s in after.streams] == ["video"]
    assert after.video.frame_count == 50
    assert not after.sei_user_data and not after.chapters
    # inspect finds nothing left for the scrubber to remove.
    assert find_removable(result.output) == ()
    assert all(t.creation == 0 and t.modification == 0 for t in after.mp4_times)
    report = json.loads(result.report.read_text())
    if render == "advanced":
        assert report["output"]["method"] == "re-encode"
    elif container == "ts" and report["output"]["method"] == "re-encode" \
            and "timestamps are missing" in " ".join(report["output"]["notes"]):
        # FFmpeg's TS muxer leaves a packet without timestamps here, in a stream with B-frames: its time
        # cannot be rebuilt from frame order, so the case is re-encoded and the report says why.
        assert report["merged_timeline"]["copy_compatible"]
    elif container == "ts" and render == "smart" and report["output"]["method"] == "re-encode":
        # Annex B (no avcC/hvcC) is not spliced; the report says so.
        assert "could not splice" in " ".join(report["output"]["notes"])
    else:
        assert report["output"]["method"] == ("smart-render" if render == "smart" else "stream-copy")
    assert all(check["passed"] for check in report["checks"])
    assert "bitstream_allow_list" in {check["name"] for check in report["checks"]}
    # The private archive does know the case: that is where the mapping belongs.
    assert CANARY in (tmp_path / "archive" / "mapping.csv").read_text()
