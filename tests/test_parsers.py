"""The hand-written byte parsers, on hand-built bytes with exact expected results: NAL units (Exp-Golomb,
Annex B and length-prefixed framing, emulation prevention, avcC/hvcC records, SEI user data) and ISO base
media boxes (64-bit sizes, size 0 "to the end", truncation)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from endoshare.media import isobmff, nal

# --------------------------------------------------------------------------------------------------
# Exp-Golomb


def test_read_ue_reads_consecutive_codes_across_bytes() -> None:
    # 1 | 010 | 011 | 00100 | 0001000 | 1 (then padding)  ->  0, 1, 2, 3, 7, 0
    bits = "1" "010" "011" "00100" "0001000" "1" "0000"
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    bit, values = 0, []
    for _ in range(6):
        value, bit = nal.read_ue(data, bit)
        values.append(value)
    assert values == [0, 1, 2, 3, 7, 0]
    assert bit == 20


def test_read_ue_largest_and_invalid_codes() -> None:
    # 31 zeros, a one, 31 ones: 2**32 - 2 (the largest value the reader accepts).
    bits = "0" * 31 + "1" + "1" * 31 + "0"
    assert nal.read_ue(int(bits, 2).to_bytes(8, "big"), 0) == (2 ** 32 - 2, 63)
    with pytest.raises(ValueError, match="Exp-Golomb"):
        nal.read_ue(bytes(5), 0)            # 32 leading zeros: no valid code
    with pytest.raises(IndexError):
        nal.read_ue(b"\x00\x00", 0)         # runs past the end


def test_sps_id_is_read_after_removing_emulation_prevention() -> None:
    # profile 100, constraints 0, level 31, then seq_parameter_set_id = 5 ("00110").
    assert nal.h264_sps_id(bytes([0x67, 100, 0, 31, 0b00110_000])) == 5
    # Escaped: the encoder inserts 0x03 after two zero bytes; without unescaping the id would read wrong.
    body = bytes([0x00, 0x00, 0x03, 0x01])  # RBSP 00 00 01: 23 zeros then a 1 -> (2**23 - 1) + next 23 bits
    assert nal._unescape(body) == b"\x00\x00\x01"
    assert nal.h264_sps_id(bytes([0x67, 100, 0, 31]) + body + b"\x80\x00\x00") == 2 ** 23 - 1 + 0x400000


# --------------------------------------------------------------------------------------------------
# Framing


def test_annex_b_split_with_3_and_4_byte_start_codes_and_trailing_zeros() -> None:
    data = (b"\x00\x00\x00\x01" + b"\x67\xaa" +           # 4-byte start code
            b"\x00\x00\x01" + b"\x68\xbb" +               # 3-byte start code
            b"\x00\x00\x00\x01" + b"\x65\xdd\xee" +       # 4-byte: its leading zero is not payload of 68 bb
            b"\x00\x00")                                  # trailing_zero_8bits
    assert list(nal.split_nal_units(data, None)) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xdd\xee"]


def test_annex_b_split_leaves_emulation_prevention_inside_units() -> None:
    # 00 00 03 01 inside a unit is escaped payload, not a start code; the unit is kept as stored.
    unit = b"\x06\x05\x00\x00\x03\x01\x42\x80"
    assert list(nal.split_nal_units(b"\x00\x00\x01" + unit + b"\x00\x00\x01\x65\x88", None)) == [unit, b"\x65\x88"]
    assert list(nal.split_nal_units(b"no start code here", None)) == []


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_length_prefixed_split_and_framing_round_trip(length_size: int) -> None:
    units = [b"\x67\x64\x00\x1f", b"\x68\xee", b"\x65" + bytes(range(1, 40))]
    data = nal.to_length_prefixed(units, length_size)
    assert len(data) == sum(len(u) + length_size for u in units)
    assert list(nal.split_nal_units(data, length_size)) == units
    assert nal.is_length_prefixed(data, length_size)
    # A unit cut short ends the split (nothing past the truncation is made up) and is not well framed.
    assert list(nal.split_nal_units(data[:-1], length_size)) == units[:2]
    assert not nal.is_length_prefixed(data[:-1], length_size)


def test_length_prefixed_split_stops_at_a_zero_length_and_annex_b_is_not_length_prefixed() -> None:
    data = nal.to_length_prefixed([b"\x65\x01"], 4) + bytes(4) + nal.to_length_prefixed([b"\x41\x02"], 4)
    assert list(nal.split_nal_units(data, 4)) == [b"\x65\x01"]
    annex_b = b"\x00\x00\x00\x01\x65\x88\x84"
    assert not nal.is_length_prefixed(annex_b, 4)        # reads as a 1-byte unit: too short to be one


def test_nal_types_and_the_allow_list() -> None:
    assert nal.nal_type(b"\x65", "h264") == 5 and nal.nal_type(b"\x06", "h264") == 6
    assert nal.nal_type(b"\x4e\x01", "hevc") == 39 and nal.nal_type(b"", "hevc") == -1
    assert nal.allowed_unit(b"\x65\x88", "h264") == b"\x65\x88"
    assert nal.allowed_unit(b"\x06\x05", "h264") is None          # SEI
    assert nal.allowed_unit(b"\xe5\x88", "h264") is None          # forbidden bit set
    assert nal.allowed_unit(b"\x0a\xff\xff", "h264") == b"\x0a"   # end of sequence: bare header
    assert nal.allowed_unit(b"\x26\x01\xaf", "hevc") == b"\x26\x01\xaf"   # IDR_W_RADL, kept whole
    assert nal.allowed_unit(b"\x26\x09\xaf", "hevc") is None      # layer 1
    assert nal.allowed_unit(b"\x26\x00\xaf", "hevc") is None      # temporal id + 1 = 0 is invalid
    assert nal.allowed_unit(b"\x48\x01", "hevc") == b"\x48\x01"   # end of sequence (36)


def test_scrub_keeps_the_framing_and_drops_what_the_list_does_not_allow() -> None:
    units = [b"\x09\xf0", b"\x06\x05\x01\x41\x80", b"\x65\x88\x84"]
    assert nal.scrub_access_unit(nal.to_length_prefixed(units, 4), "h264", 4) == nal.to_length_prefixed(
        [b"\x65\x88\x84"], 4)
    annex_b = b"".join(b"\x00\x00\x01" + u for u in units)
    assert nal.scrub_access_unit(annex_b, "h264", None) == b"\x00\x00\x00\x01\x65\x88\x84"
    assert nal.disallowed_units(annex_b, "h264", None) == units[:2]


def test_sei_user_data_is_read_unescaped() -> None:
    uuid = bytes(range(16))
    payload = uuid + b"A\x00\x00\x01B"                      # 21 bytes once unescaped
    escaped = uuid + b"A\x00\x00\x03\x01B"
    unit = bytes([0x06, nal.SEI_USER_DATA_UNREGISTERED, len(payload)]) + escaped + b"\x80"
    assert nal.is_sei(unit, "h264")
    assert nal.sei_user_data(unit, "h264") == [nal.SeiUserData(5, uuid.hex(), "A...B", 21)]
    # An HEVC prefix SEI (2-byte NAL header) with a registered (ITU-T T.35) payload of 3 bytes.
    hevc = bytes([39 << 1, 0x01, nal.SEI_USER_DATA_REGISTERED, 3]) + b"\xb5ok" + b"\x80"
    assert nal.sei_user_data(hevc, "hevc") == [nal.SeiUserData(4, "", ".ok", 3)]
    # A message cut before its size field: nothing is read.
    assert nal.sei_user_data(bytes([0x06, 5]), "h264") == []


def test_an_h264_recovery_point_is_kept_rebuilt_and_nothing_else_of_its_sei() -> None:
    """An open-GOP I picture is a place to start decoding only through its recovery point message (FFmpeg's
    MP4 muxer lists it as a sync sample only then): that message is kept, rewritten from its four fields,
    and every other message of the unit is dropped."""
    user = bytes([nal.SEI_USER_DATA_UNREGISTERED, 22]) + bytes(16) + b"J\x00\x00\x03\x01ne"  # 22 once unescaped
    recovery = bytes([nal.SEI_RECOVERY_POINT, 1, 0xC4])       # recovery_frame_cnt 0, exact match
    unit = b"\x06" + user[:2] + user[2:] + recovery + b"\x80"
    canonical = b"\x06\x06\x01\xc4\x80"
    assert nal.allowed_unit(unit, "h264") == canonical
    assert nal.allowed_unit(canonical, "h264") == canonical
    assert nal.scrub_access_unit(nal.to_length_prefixed([unit, b"\x25\x88"], 4), "h264", 4) == \
        nal.to_length_prefixed([canonical, b"\x25\x88"], 4)
    assert nal.disallowed_units(nal.to_length_prefixed([unit, canonical], 4), "h264", 4) == [unit]
    # recovery_frame_cnt 300 (Exp-Golomb over two bytes) with broken_link set: the same bits come back.
    wide = b"\x06\x06\x03\x00\x96\xa4\x80"
    assert nal.h264_recovery_point_sei(wide) == wide
    # No recovery point, a message cut short, or a count no stream uses: the unit goes.
    assert nal.allowed_unit(b"\x06" + user + b"\x80", "h264") is None
    assert nal.allowed_unit(bytes([0x06, nal.SEI_RECOVERY_POINT, 2, 0xC4]), "h264") is None
    assert nal.allowed_unit(b"\x06\x06\x05\x00\x00\x00\x00\x01\x80", "h264") is None
    assert nal.allowed_unit(b"\x86\x06\x01\xc4\x80", "h264") is None      # forbidden bit set


# --------------------------------------------------------------------------------------------------
# Decoder configuration records

SPS_H264 = bytes([0x67, 100, 0x00, 31, 0xAC, 0xD9])      # High profile, level 3.1
PPS_H264 = bytes([0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0])
HIGH_TAIL = bytes([0xFD, 0xF8, 0xF8, 0x00])              # 4:2:0, 8-bit, no SPS extensions


def avcc(sps: list[bytes], pps: list[bytes], length_size: int = 4, tail: bytes = HIGH_TAIL,
         profile: int = 100) -> bytes:
    out = bytearray([1, profile, 0, 31, 0xFC | (length_size - 1), 0xE0 | len(sps)])
    for unit in sps:
        out += len(unit).to_bytes(2, "big") + unit
    out.append(len(pps))
    for unit in pps:
        out += len(unit).to_bytes(2, "big") + unit
    return bytes(out + tail)


def test_avcc_parse_and_serialize_exactly() -> None:
    record = avcc([SPS_H264], [PPS_H264], length_size=2)
    config = nal.AvcConfig.parse(record)
    assert config == nal.AvcConfig(100, 0, 31, 2, (SPS_H264,), (PPS_H264,), HIGH_TAIL)
    assert config.serialize() == record
    assert nal.nal_length_size(record, "h264") == 2
    assert nal.record_units(record, "h264") == nal.RecordUnits((SPS_H264, PPS_H264), 0)
    grown = config.with_parameter_sets(SPS_H264[:4], PPS_H264[:2])
    assert nal.AvcConfig.parse(grown.serialize()).sps == (SPS_H264, SPS_H264[:4])
    with pytest.raises(ValueError, match="avcC"):
        nal.AvcConfig.parse(b"\x00" * 8)


def test_avcc_record_with_a_sei_is_cleaned_and_truncation_is_counted() -> None:
    sei = b"\x06\x05\x02hi\x80"
    record = avcc([SPS_H264, sei], [PPS_H264])
    assert nal.disallowed_record_units(record, "h264") == [sei]
    cleaned = nal.clean_avcc(record)
    assert nal.record_units(cleaned, "h264") == nal.RecordUnits((SPS_H264, PPS_H264), 0)
    assert nal.disallowed_record_units(cleaned, "h264") == []
    # Extra bytes after the known fields are counted as leftover, and a cut-short record keeps what it read.
    assert nal.record_units(record + b"XYZ", "h264").leftover_bytes == 3
    cut = nal.record_units(record[:10], "h264")
    assert cut.units == () and cut.leftover_bytes == 10
    # Baseline records end after the PPS list.
    baseline = avcc([bytes([0x67, 66, 0xC0, 30, 0xF4])], [PPS_H264], tail=b"", profile=66)
    assert nal.record_units(baseline, "h264").leftover_bytes == 0


def test_annex_b_extradata_is_read_as_units() -> None:
    extradata = b"\x00\x00\x00\x01" + SPS_H264 + b"\x00\x00\x01" + PPS_H264
    assert nal.nal_length_size(extradata, "h264") is None
    assert nal.record_units(extradata, "h264").units == (SPS_H264, PPS_H264)
    assert nal.clean_record(extradata + b"\x00\x00\x01\x06\x05\x01\x41\x80", "h264") == (
        b"\x00\x00\x00\x01" + SPS_H264 + b"\x00\x00\x00\x01" + PPS_H264)


VPS = bytes([32 << 1, 0x01, 0x0C, 0x01, 0xFF, 0xFF])
SPS_HEVC = bytes([33 << 1, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03,
                  0x00, 0x00, 0x03, 0x00, 0x5D, 0xA0])
PPS_HEVC = bytes([34 << 1, 0x01, 0xC1, 0x72, 0xB4, 0x62, 0x40])
SEI_HEVC = bytes([39 << 1, 0x01, 0x05, 0x01, 0x41, 0x80])


def hvcc(arrays: list[tuple[int, list[bytes]]], length_size: int = 4) -> bytes:
    header = bytearray(22)
    header[0] = 1
    header[21] = 0x0C | (length_size - 1)
    out = header + bytes([len(arrays)])
    for kind, units in arrays:
        out += bytes([0x80 | kind]) + len(units).to_bytes(2, "big")
        for unit in units:
            out += len(unit).to_bytes(2, "big") + unit
    return bytes(out)


def test_hvcc_units_length_size_and_parameter_sets() -> None:
    record = hvcc([(32, [VPS]), (33, [SPS_HEVC]), (34, [PPS_HEVC]), (39, [SEI_HEVC])], length_size=4)
    assert nal.nal_length_size(record, "hevc") == 4
    assert nal.nal_length_size(hvcc([(32, [VPS])], length_size=2), "hevc") == 2
    assert nal.record_units(record, "hevc") == nal.RecordUnits((VPS, SPS_HEVC, PPS_HEVC, SEI_HEVC), 0)
    assert nal.hvcc_parameter_sets(record) == (VPS, SPS_HEVC, PPS_HEVC)
    assert nal.disallowed_record_units(record, "hevc") == [SEI_HEVC]
    # A unit listed in the wrong array is judged by its own header: an SEI claimed as an SPS is still an SEI.
    disguised = hvcc([(32, [VPS]), (33, [SPS_HEVC, SEI_HEVC]), (34, [PPS_HEVC])])
    assert nal.disallowed_record_units(disguised, "hevc") == [SEI_HEVC]
    with pytest.raises(ValueError, match="hvcC"):
        nal.hvcc_parameter_sets(record[:20])


def test_clean_hvcc_keeps_one_array_per_parameter_set_type_and_sets_completeness() -> None:
    record = hvcc([(39, [SEI_HEVC]), (34, [PPS_HEVC]), (33, [SPS_HEVC]), (32, [VPS])])
    cleaned = nal.clean_hvcc(record, complete=False)
    assert cleaned[22] == 3                                    # numOfArrays
    assert nal.record_units(cleaned, "hevc") == nal.RecordUnits((VPS, SPS_HEVC, PPS_HEVC), 0)
    assert [cleaned[23], cleaned[23 + 3 + 2 + len(VPS)]] == [32, 33]   # completeness bit cleared, in order
    assert nal.hvcc_for_inband_track(record) == cleaned
    assert nal.clean_hvcc(record, complete=True)[23] == 0x80 | 32
    # The profile/tier/level bytes come from the SPS (after its sub-layer byte, unescaped).
    assert cleaned[1:13] == bytes([0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D])


def test_truncated_hvcc_keeps_the_complete_arrays() -> None:
    record = hvcc([(32, [VPS]), (33, [SPS_HEVC])])
    cut = record[:-3]
    read = nal.record_units(cut, "hevc")
    assert read.units == (VPS,)
    assert read.leftover_bytes == len(cut) - (23 + 3 + 2 + len(VPS))


# --------------------------------------------------------------------------------------------------
# ISO base media boxes


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def large_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


def walk(data: bytes) -> list[tuple[bytes, str, int, int, int]]:
    return list(isobmff.iter_boxes(io.BytesIO(data), len(data)))


def test_boxes_are_walked_depth_first_with_offsets_and_header_sizes() -> None:
    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00")
    moov = box(b"moov", box(b"trak", box(b"tkhd", bytes(12))) + box(b"udta", box(b"XMP_", b"secret")))
    data = ftyp + moov
    assert walk(data) == [
        (b"ftyp", "/ftyp", 0, 16, 8),
        (b"moov", "/moov", 16, len(moov), 8),
        (b"trak", "/moov/trak", 24, 28, 8),
        (b"tkhd", "/moov/trak/tkhd", 32, 20, 8),
        (b"udta", "/moov/udta", 52, 22, 8),
        (b"XMP_", "/moov/udta/XMP_", 60, 14, 8),
    ]


def test_64_bit_largesize_boxes() -> None:
    mdat = large_box(b"mdat", b"\x01" * 10)
    moov = large_box(b"moov", box(b"mvhd", bytes(20)))
    data = box(b"ftyp", b"isom") + mdat + moov
    assert walk(data) == [
        (b"ftyp", "/ftyp", 0, 12, 8),
        (b"mdat", "/mdat", 12, 26, 16),
        (b"moov", "/moov", 38, 44, 16),
        (b"mvhd", "/moov/mvhd", 54, 28, 8),
    ]


def test_size_zero_box_runs_to_the_end_of_its_parent() -> None:
    data = box(b"ftyp", b"isom") + struct.pack(">I4s", 0, b"mdat") + b"\xaa" * 100
    assert walk(data) == [(b"ftyp", "/ftyp", 0, 12, 8), (b"mdat", "/mdat", 12, 108, 8)]
    # Inside a container, "to the end" means the end of the container, not of the file.
    inner = box(b"tkhd", bytes(4)) + struct.pack(">I4s", 0, b"udta") + b"\x00" * 6
    data = box(b"trak", inner) + box(b"free")
    assert walk(data) == [
        (b"trak", "/trak", 0, 8 + len(inner), 8),
        (b"tkhd", "/trak/tkhd", 8, 12, 8),
        (b"udta", "/trak/udta", 20, 14, 8),
        (b"free", "/free", 34, 8, 8),
    ]


@pytest.mark.parametrize("cut", [
    pytest.param(lambda good: good + b"\x00\x00\x00", id="partial-header"),
    pytest.param(lambda good: good + struct.pack(">I4s", 500, b"mdat") + b"\x00" * 10, id="size-past-end"),
    pytest.param(lambda good: good + struct.pack(">I4s", 4, b"free") + b"\x00" * 10, id="size-below-header"),
    pytest.param(lambda good: good + struct.pack(">I4s", 1, b"mdat") + b"\x00\x00", id="largesize-cut"),
    pytest.param(lambda good: good + struct.pack(">I4sQ", 1, b"mdat", 12) + b"\x00" * 10, id="largesize-small"),
])
def test_truncated_or_inconsistent_boxes_end_the_walk(cut) -> None:
    good = box(b"ftyp", b"isom") + box(b"free", b"xx")
    assert walk(cut(good)) == [(b"ftyp", "/ftyp", 0, 12, 8), (b"free", "/free", 12, 10, 8)]


def test_a_box_reaching_past_its_parent_is_not_read_as_its_child() -> None:
    # The child claims 40 bytes inside a 20-byte parent: the parent is listed, the child is not.
    parent = struct.pack(">I4s", 20, b"moov") + struct.pack(">I4s", 40, b"udta") + bytes(4)
    assert walk(parent + box(b"free")) == [(b"moov", "/moov", 0, 20, 8), (b"free", "/free", 20, 8, 8)]


def test_meta_is_read_as_a_full_box_in_mp4_and_a_plain_container_in_quicktime() -> None:
    hdlr = box(b"hdlr", bytes(12) + b"mdir")
    mp4_meta = box(b"meta", b"\x00\x00\x00\x00" + hdlr)
    qt_meta = box(b"meta", hdlr)
    assert [p for _, p, *_ in walk(box(b"udta", mp4_meta))] == ["/udta", "/udta/meta", "/udta/meta/hdlr"]
    assert [p for _, p, *_ in walk(box(b"udta", qt_meta))] == ["/udta", "/udta/meta", "/udta/meta/hdlr"]


def test_box_times_read_version_0_and_1(tmp_path: Path) -> None:
    mvhd_v1 = box(b"mvhd", b"\x01\x00\x00\x00" + struct.pack(">QQ", 2 ** 33 + 5, 2 ** 33 + 6) + bytes(8))
    tkhd_v0 = box(b"tkhd", b"\x00\x00\x00\x00" + struct.pack(">II", 7, 8) + bytes(8))
    mdhd_cut = box(b"mdhd", b"\x00\x00\x00\x00\x00\x01")     # too short to hold its times: not reported
    path = tmp_path / "times.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"moov", mvhd_v1 + box(b"trak", tkhd_v0 + box(b"mdia", mdhd_cut))))
    assert isobmff.box_times(path) == [isobmff.BoxTime("mvhd", "/moov/mvhd", 2 ** 33 + 5, 2 ** 33 + 6),
                                       isobmff.BoxTime("tkhd", "/moov/trak/tkhd", 7, 8)]
    assert isobmff.looks_like_isobmff(path)
    assert isobmff.has_top_level_box(path, b"moov") and not isobmff.has_top_level_box(path, b"trak")


def test_video_sample_counts_come_from_video_tracks_only(tmp_path: Path) -> None:
    def trak(handler: bytes, samples: int) -> bytes:
        hdlr = box(b"hdlr", bytes(8) + handler + bytes(12))
        stsz = box(b"stsz", bytes(8) + struct.pack(">I", samples))
        return box(b"trak", box(b"mdia", hdlr + box(b"minf", box(b"stbl", stsz))))

    path = tmp_path / "tracks.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"moov", trak(b"vide", 250) + trak(b"soun", 400)
                                                 + trak(b"vide", 3)))
    assert isobmff.video_sample_counts(path) == [250, 3]
    path.write_bytes(box(b"ftyp", b"isom") + box(b"free"))
    assert not isobmff.has_top_level_box(path, b"moov") and isobmff.video_sample_counts(path) == []
