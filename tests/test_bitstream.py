"""The bitstream allow-list: what the scrubber keeps, what the verifier rejects."""

from __future__ import annotations

import os
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from endoshare.media.join import plan_join
from endoshare.media.nal import (
    ALLOWED_NAL_TYPES,
    clean_avcc,
    clean_hvcc,
    clean_record,
    disallowed_record_units,
    disallowed_units,
    h264_pps_hides_slices,
    nal_type,
    record_hides_slices,
    record_units,
    scrub_access_unit,
    split_nal_units,
    to_length_prefixed,
)
from endoshare.media.probe import probe
from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.render.common import Redaction, RenderResult
from endoshare.verify import verify_output
from media import barcode_clip, ffmpeg
from nal_media import (
    h264_unit,
    hevc_sei,
    hevc_unit,
    inject_units,
    planted_units,
    record_of,
    strict_decode,
    with_record_unit,
)

TEXT = b"ZQXBITSTREAM42"


def test_h264_units_outside_the_allow_list_are_dropped_in_both_framings() -> None:
    units = [h264_unit(kind, TEXT) for kind in range(32)]
    for framing in (4, 2, None):
        if framing:
            data = to_length_prefixed(units, framing)
        else:
            data = b"junk before the first start code" + b"".join(b"\x00\x00\x01" + u for u in units)
        kept = list(split_nal_units(scrub_access_unit(data, "h264", framing), framing))
        assert sorted(nal_type(u, "h264") for u in kept) == [1, 5, 7, 8, 10, 11]
        # End of sequence / stream have no payload: only their header byte is kept.
        assert [u for u in kept if nal_type(u, "h264") in (10, 11)] == [b"\x0a", b"\x0b"]
        assert sum(TEXT in u for u in kept) == 4
        assert {nal_type(u, "h264") for u in disallowed_units(data, "h264", framing)} == \
            set(range(32)) - {1, 5, 7, 8}


def test_h264_unit_with_the_forbidden_bit_is_dropped() -> None:
    data = to_length_prefixed([bytes([0x80 | 0x65]) + TEXT, h264_unit(1, b"slice")], 4)
    assert scrub_access_unit(data, "h264", 4) == to_length_prefixed([h264_unit(1, b"slice")], 4)


def test_hevc_keeps_base_layer_decodable_units_only() -> None:
    units = [hevc_unit(kind, TEXT) for kind in range(64)]
    units += [hevc_unit(1, TEXT, layer=1), hevc_unit(19, TEXT, layer=5),
              bytes([1 << 1, 0]) + TEXT]          # temporal id 0 + 1 = 0 is forbidden
    kept = list(split_nal_units(scrub_access_unit(to_length_prefixed(units, 4), "hevc", 4), 4))
    assert sorted(nal_type(u, "hevc") for u in kept) == sorted(ALLOWED_NAL_TYPES["hevc"])
    assert all(u[0] & 1 == 0 and u[1] >> 3 == 0 and u[1] & 7 for u in kept)
    assert [u for u in kept if nal_type(u, "hevc") in (36, 37)] == [bytes([72, 1]), bytes([74, 1])]
    assert not set(range(10, 16)) & {nal_type(u, "hevc") for u in kept}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("bitstream")
    out = {}
    for codec, encoder in (("h264", "libx264"), ("hevc", "libx265")):
        plain = barcode_clip(work / f"plain-{codec}.mp4", range(25), codec=encoder,
                             options={"x265-params": "log-level=error"} if codec == "hevc" else None)
        record_unit = h264_unit(12, TEXT) if codec == "h264" else hevc_sei(TEXT)
        out[codec] = plain
        out[f"{codec}-planted"] = inject_units(plain, work / f"planted-{codec}.mp4",
                                               planted_units(codec, TEXT), record_unit)
    return out


def test_avcc_is_rebuilt_from_its_parameter_sets(clips: dict[str, Path]) -> None:
    _, plain = record_of(clips["h264"])
    dirty = with_record_unit(plain, "h264", h264_unit(12, TEXT)) + b"trailing bytes"
    assert disallowed_record_units(dirty, "h264") and TEXT in dirty
    clean = clean_avcc(dirty)
    assert TEXT not in clean and b"trailing" not in clean
    assert not disallowed_record_units(clean, "h264") and record_units(clean, "h264").leftover_bytes == 0
    assert clean_avcc(clean) == clean
    # x264's record is already clean: same parameter sets, same header.
    assert record_units(clean, "h264").units == record_units(plain, "h264").units
    assert clean[:4] == plain[:4]


def test_hvcc_is_rebuilt_from_its_parameter_sets(clips: dict[str, Path]) -> None:
    _, record = record_of(clips["hevc-planted"])
    assert TEXT in record and disallowed_record_units(record, "hevc")
    # An SPS array that really holds a filler unit: the unit's own header decides, not the array's.
    disguised = record[:22] + bytes([record[22] + 1]) + record[23:] + bytes([33, 0, 1]) + \
        len(hevc_unit(38, TEXT)).to_bytes(2, "big") + hevc_unit(38, TEXT)
    for dirty in (record, disguised):
        clean = clean_hvcc(dirty)
        assert TEXT not in clean
        assert {nal_type(u, "hevc") for u in record_units(clean, "hevc").units} == {32, 33, 34}
        assert record_units(clean, "hevc").leftover_bytes == 0
        assert clean_hvcc(clean) == clean
    assert clean_record(b"\x00\x00\x00\x01" + h264_unit(12, TEXT) + b"\x00\x00\x00\x01" + h264_unit(7, b"sps"),
                        "h264") == b"\x00\x00\x00\x01" + h264_unit(7, b"sps")


def _expected(frames: int) -> RenderResult:
    return RenderResult(method="stream-copy", codec="h264", frame_count=frames, frame_rate=Fraction(25),
                        width=320, height=180)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_verifier_rejects_units_outside_the_allow_list(clips: dict[str, Path], codec: str) -> None:
    checks = {c.name: c for c in verify_output(clips[f"{codec}-planted"], _expected(25))}
    check = checks["bitstream_allow_list"]
    assert not check.passed
    planted = {12, 17, 24, 31, 2} if codec == "h264" else {38, 41, 47, 48, 63, 39, 1}
    assert all(f"{kind}:" in check.detail for kind in planted), check.detail
    assert "record" in check.detail
    # Straight from the encoder, only the encoder's SEI (x264/x265 write their version there) is found.
    plain = {c.name: c for c in verify_output(clips[codec], _expected(25))}["bitstream_allow_list"]
    assert not plain.passed and ("types 6:" if codec == "h264" else "types [39] in the hvcC") in plain.detail, \
        plain.detail


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("mode", ["fast", "advanced"])
def test_scrubbed_outputs_decode_like_their_source_and_pass(tmp_path: Path, clips: dict[str, Path],
                                                            codec: str, mode: str) -> None:
    case = tmp_path / "case"
    case.mkdir()
    os.link(clips[f"{codec}-planted"], case / "clip.mp4")
    result = process_case(CaseRequest(case), ProcessOptions(out_dir=tmp_path / "shared",
                                                            archive_dir=tmp_path / "archive",
                                                            redaction=Redaction.BLACK, detector="none",
                                                            mode=mode))
    assert result.status == "ok" and result.output is not None, result.error
    assert TEXT not in result.output.read_bytes()
    if mode == "fast":
        # Stream copy: the very same pictures, bit for bit once decoded.
        pairs = zip(strict_decode(result.output), strict_decode(clips[codec]), strict=True)
        assert all((a == b).all() for a, b in pairs)
    checks = {c.name: c for c in verify_output(result.output, _expected(25))}
    assert checks["bitstream_allow_list"].passed, checks["bitstream_allow_list"].detail


def test_a_clip_name_that_is_not_utf8_is_scanned_for(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    raw_name = b"Patient M\xfcller \xff\xfe 1"             # Latin-1 and stray bytes: not UTF-8
    name = os.fsdecode(raw_name)
    barcode_clip(case / f"{name}.mp4", range(25))
    result = process_case(CaseRequest(case), ProcessOptions(out_dir=tmp_path / "shared",
                                                            archive_dir=tmp_path / "archive",
                                                            redaction=Redaction.BLACK, detector="none"))
    assert result.status == "ok", result.error
    assert raw_name not in result.output.read_bytes()
    # The mapping keeps the name as its bytes on disk.
    assert raw_name in (tmp_path / "archive" / "mapping.csv").read_bytes()
    # The scan really searches for those bytes: a file carrying them fails it.
    leaky = tmp_path / "leaky.mp4"
    leaky.write_bytes(result.output.read_bytes() + raw_name)
    checks = {c.name: c for c in verify_output(leaky, _expected(25), identifiers=(name,))}
    assert not checks["no_identifying_strings"].passed


@pytest.mark.parametrize("profile, container", [("baseline", "mp4"), ("main", "mp4"), ("high", "mp4"),
                                                ("high", "ts"), ("high", "mkv")])
def test_copied_records_hold_parameter_sets_only_for_every_profile(tmp_path: Path, profile: str,
                                                                   container: str) -> None:
    """avcC records differ by profile (High and above carry chroma and bit-depth fields); an MPEG-TS
    source has none (the muxer builds it from in-band parameter sets)."""
    case = tmp_path / "case"
    case.mkdir()
    source = barcode_clip(tmp_path / "source.mp4", range(25), options={"profile": profile})
    planted = inject_units(source, tmp_path / "planted.mp4", planted_units("h264", TEXT, data_partition=False),
                           h264_unit(12, TEXT))
    ffmpeg("-i", planted, "-c:v", "copy", case / f"clip.{container}")
    result = process_case(CaseRequest(case), ProcessOptions(out_dir=tmp_path / "shared",
                                                            archive_dir=tmp_path / "archive",
                                                            redaction=Redaction.BLACK, detector="none"))
    assert result.status == "ok" and result.output is not None, result.error
    report = result.report.read_text()
    assert '"method": "stream-copy"' in report
    assert TEXT not in result.output.read_bytes()
    _, record = record_of(result.output)
    assert record_units(record, "h264").leftover_bytes == 0 and not disallowed_record_units(record, "h264")


def _pps(redundant: bool, slice_groups: int = 0) -> bytes:
    """An H.264 PPS built bit by bit (ids 0, CABAC, no weighted prediction, default QPs)."""
    def ue(value: int) -> str:
        code = bin(value + 1)[2:]
        return "0" * (len(code) - 1) + code
    bits = (ue(0) + ue(0) + "10" + ue(slice_groups) + ue(0) + ue(0) + "000" + ue(0) + ue(0) + ue(0) + "10"
            + ("1" if redundant else "0") + "1")
    bits += "0" * (-len(bits) % 8)
    return bytes([0x68]) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_h264_parameter_sets_that_let_decoders_skip_slices_are_refused(clips: dict[str, Path]) -> None:
    """Redundant slices (and slice groups, which FFmpeg cannot decode) would let a copied picture carry
    slices no decoder shows: the record marks the source as not copyable, and the verifier rejects it."""
    _, record = record_of(clips["h264"])
    x264_pps = record_units(record, "h264").units[1]
    assert not h264_pps_hides_slices(x264_pps) and not h264_pps_hides_slices(_pps(False))
    assert h264_pps_hides_slices(_pps(True)) and h264_pps_hides_slices(_pps(False, slice_groups=1))
    assert h264_pps_hides_slices(b"\x68")                    # unreadable: refused
    hiding = record.replace(len(x264_pps).to_bytes(2, "big") + x264_pps,
                            len(_pps(True)).to_bytes(2, "big") + _pps(True))
    assert record_hides_slices(hiding, "h264") and not record_hides_slices(record, "h264")
    assert disallowed_record_units(hiding, "h264") == [_pps(True)]
    sample = to_length_prefixed([_pps(True), h264_unit(1, b"slice")], 4)
    assert disallowed_units(sample, "h264", 4) == [_pps(True)]


def test_a_source_whose_pps_lets_slices_be_skipped_is_not_copied(clips: dict[str, Path]) -> None:
    info = probe(clips["h264"])
    assert plan_join([info]).copy_compatible
    record = info.video.extradata
    x264_pps = record_units(record, "h264").units[1]
    hiding = record.replace(len(x264_pps).to_bytes(2, "big") + x264_pps,
                            len(_pps(True)).to_bytes(2, "big") + _pps(True))
    video = replace(info.video, extradata=hiding)
    plan = plan_join([replace(info, streams=tuple(video if s.kind == "video" else s for s in info.streams))])
    assert not plan.copy_compatible and "decoders skip" in " ".join(plan.reasons)
