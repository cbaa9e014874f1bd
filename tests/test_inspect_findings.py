"""``endoshare inspect`` shows what the scrubber removes, each kind found in a file built to carry it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import av
import pytest

from endoshare.cli import main
from endoshare.media.findings import Finding, find_removable
from media import barcode_clip, barcode_frame, ffmpeg
from nal_media import h264_unit, inject_units, planted_units

TEXT = "ZQXINSPECT1234"


def kinds(findings: tuple[Finding, ...], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return barcode_clip(tmp_path_factory.mktemp("inspect") / "base.mp4", range(25))


def test_nal_units_outside_the_allow_list_with_type_count_and_text(tmp_path: Path, base: Path) -> None:
    planted = inject_units(base, tmp_path / "planted.mp4", planted_units("h264", TEXT.encode()),
                           h264_unit(12, TEXT.encode()))
    found = {f.where: f for f in kinds(find_removable(planted), "nal_units")}
    for kind in (12, 17, 24, 31, 2):
        unit = found[f"H.264 NAL type {kind} in the samples"]
        assert unit.count == 25 and TEXT in unit.preview
    assert TEXT in found["H.264 NAL type 12 in the avcC/hvcC record"].preview
    # x264's own SEI (its version string) is there too.
    assert "x264" in found["H.264 NAL type 6 in the samples"].preview
    # A file as Endoshare writes it has none.
    clean = tmp_path / "clean.mp4"
    ffmpeg("-i", planted, "-c:v", "copy", "-bsf:v", "filter_units=pass_types=1|5|7|8", clean)
    assert not kinds(find_removable(clean), "nal_units")


def test_mpegts_service_name_and_provider(tmp_path: Path, base: Path) -> None:
    ts = tmp_path / "clip.ts"
    ffmpeg("-i", base, "-c:v", "copy", "-metadata", f"service_name=Theatre {TEXT}",
           "-metadata", f"service_provider=Hospital {TEXT}", ts)
    found = {f.where: f.preview for f in kinds(find_removable(ts), "mpegts_service")}
    assert found == {"service name (SDT)": f"Theatre {TEXT}", "service provider (SDT)": f"Hospital {TEXT}"}


@pytest.mark.parametrize("container, codec", [("mp4", "mov_text"), ("mkv", "srt")])
def test_subtitle_text(tmp_path: Path, base: Path, container: str, codec: str) -> None:
    subtitles = tmp_path / "subs.srt"
    subtitles.write_text(f"1\n00:00:00,000 --> 00:00:00,500\nPatient {TEXT}\n\n"
                         "2\n00:00:00,500 --> 00:00:00,900\nsecond line\n", encoding="utf-8")
    out = tmp_path / f"clip.{container}"
    ffmpeg("-i", base, "-i", subtitles, "-map", "0:v", "-map", "1:s", "-c:v", "copy", "-c:s", codec, out)
    (found,) = kinds(find_removable(out), "subtitle_text")
    assert found.count == 2 and f"Patient {TEXT}" in found.preview and "second line" in found.preview
    assert codec in found.where


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_xmp_uuid_and_free_boxes(tmp_path: Path, base: Path) -> None:
    data = base.read_bytes()
    # Boxes appended at the top level: MP4 readers skip boxes they do not know.
    extra = (_box(b"uuid", bytes(16) + f"<x:xmpmeta>{TEXT}</x:xmpmeta>".encode())
             + _box(b"free", f"operator {TEXT}".encode()) + _box(b"skip", bytes(32)))
    planted = tmp_path / "boxes.mp4"
    planted.write_bytes(data + extra)
    found = {f.where.split(" ")[0]: f for f in kinds(find_removable(planted), "mp4_box")}
    assert TEXT in found["/uuid"].preview and TEXT in found["/free"].preview
    assert "/skip" not in found           # zero-filled: nothing to show
    with av.open(str(planted)) as container:           # still a valid file
        assert sum(1 for _ in container.decode(video=0)) == 25


def test_xmp_box_in_user_data(tmp_path: Path, base: Path) -> None:
    out = tmp_path / "xmp.mov"
    ffmpeg("-i", base, "-c:v", "copy", out)
    data = out.read_bytes()
    # Put an XMP_ box into moov/udta by hand (FFmpeg does not write one).
    xmp = _box(b"XMP_", f"<rdf:Description dc:creator='{TEXT}'/>".encode())
    moov = data.find(b"moov") - 4
    size = struct.unpack(">I", data[moov:moov + 4])[0]
    udta = _box(b"udta", xmp)
    patched = (data[:moov] + struct.pack(">I", size + len(udta)) + data[moov + 4:moov + size] + udta
               + data[moov + size:])
    # moov grows: that keeps every chunk offset valid only because mdat comes before it.
    assert data.find(b"mdat") < moov
    out.write_bytes(patched)
    found = [f for f in kinds(find_removable(out), "mp4_box") if "XMP_" in f.where]
    assert found and TEXT in found[0].preview and found[0].where.startswith("/moov/udta/XMP_")


def mpeg2_with_user_data(path: Path) -> Path:
    """An MPEG-2 clip with plain user data and A53 caption user data before each picture's slices."""
    with av.open(str(path), "w", format="mpeg") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        captions = b"GA94\x03" + bytes([0x40 | 2, 0xFF]) + b"\xfc\x94\x20\xfc\x94\x2c" + b"\xff"
        user_data = b"\x00\x00\x01\xb2" + f"camera {TEXT}".encode() + b"\x00\x00\x01\xb2" + captions

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                data = bytes(packet)
                slice_at = data.find(b"\x00\x00\x01\x01")
                new = av.Packet(data[:slice_at] + user_data + data[slice_at:])
                new.pts, new.dts, new.time_base, new.is_keyframe = (packet.pts, packet.dts, packet.time_base,
                                                                   packet.is_keyframe)
                new.stream = stream
                container.mux(new)

        for index in range(10):
            frame = av.VideoFrame.from_ndarray(barcode_frame(index), format="rgb24")
            frame.pts = index
            mux(stream.encode(frame))
        mux(stream.encode(None))
    return path


def test_mpeg2_user_data_and_a53_captions(tmp_path: Path) -> None:
    clip = mpeg2_with_user_data(tmp_path / "clip.mpg")
    with av.open(str(clip)) as container:                # the decoder accepts it
        frames = list(container.decode(video=0))
    assert len(frames) == 10
    found = {f.where: f for f in kinds(find_removable(clip), "mpeg2_user_data")}
    assert found["MPEG-2 user data"].count == 10 and TEXT in found["MPEG-2 user data"].preview
    assert found["A53 closed captions (GA94 user data)"].count == 10


def test_cli_prints_and_writes_json(tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    planted = inject_units(base, tmp_path / "planted.mp4", [h264_unit(12, TEXT.encode())])
    assert main(["inspect", str(planted)]) == 0
    text = capsys.readouterr().out
    assert "removed by the scrubber:" in text and "H.264 NAL type 12 in the samples, 25x" in text and TEXT in text
    assert main(["inspect", "--json", str(planted)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"kind": "nal_units", "where": "H.264 NAL type 12 in the samples", "count": 25,
            "preview": TEXT} in record["removable"]
    assert record["streams"][0]["kind"] == "video"
