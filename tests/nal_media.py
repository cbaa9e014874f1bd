"""Test media whose bitstream carries text in NAL units a decoder skips (filler, reserved, unspecified
types, SEI, units of an enhancement layer), in the samples and in the avcC/hvcC record."""

from __future__ import annotations

from pathlib import Path

import av
import av.error
import numpy as np

from endoshare.media.nal import nal_length_size, split_nal_units, to_length_prefixed

SEI_UUID = bytes(range(16))


def h264_unit(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + payload + b"\x80"


def hevc_unit(kind: int, payload: bytes, layer: int = 0) -> bytes:
    return bytes([kind << 1 | layer >> 5, (layer & 31) << 3 | 1]) + payload + b"\x80"


def hevc_sei(text: bytes) -> bytes:
    """A prefix SEI NAL unit with one user_data_unregistered message."""
    body = SEI_UUID + text
    assert len(body) < 255
    return hevc_unit(39, bytes([5, len(body)]) + body)


#: (NAL type, layer) → what each planted unit is, for messages.
H264_PLANTED = {12: "filler", 17: "reserved", 24: "unspecified", 31: "unspecified", 2: "data partition A"}
HEVC_PLANTED = {38: "filler", 41: "reserved", 47: "reserved", 48: "unspecified", 63: "unspecified"}


def planted_units(codec: str, text: bytes, data_partition: bool = True) -> list[bytes]:
    """One unit of every planted kind, each carrying ``text``.  Without ``data_partition`` no H.264
    data partition: in Annex B (MPEG-TS), FFmpeg's parser would take it for a new picture."""
    if codec == "h264":
        return [h264_unit(kind, b" " + text + b" ") for kind in H264_PLANTED if data_partition or kind != 2]
    return [hevc_sei(text), *(hevc_unit(kind, b" " + text + b" ") for kind in HEVC_PLANTED),
            # A "slice" of layer 1: a single-layer decoder skips it.
            hevc_unit(1, b" " + text + b" ", layer=1)]


def with_record_unit(extradata: bytes, codec: str, unit: bytes) -> bytes:
    """The avcC (one more entry in its SPS list) or hvcC (one more array) also holding ``unit``."""
    if codec == "h264":
        count = extradata[5] & 0x1F
        pos = 6
        for _ in range(count):
            pos += 2 + int.from_bytes(extradata[pos:pos + 2], "big")
        entry = len(unit).to_bytes(2, "big") + unit
        return extradata[:5] + bytes([0xE0 | (count + 1)]) + extradata[6:pos] + entry + extradata[pos:]
    kind = unit[0] >> 1 & 0x3F
    array = bytes([kind]) + (1).to_bytes(2, "big") + len(unit).to_bytes(2, "big") + unit
    return extradata[:22] + bytes([extradata[22] + 1]) + extradata[23:] + array


def inject_units(source: Path, target: Path, units: list[bytes], record_unit: bytes | None = None) -> Path:
    """Copy ``source`` (MP4, length-prefixed H.264/HEVC) to ``target`` with ``units`` put before the
    pictures of every sample, and ``record_unit`` added to the avcC/hvcC."""
    with av.open(str(source)) as src, av.open(str(target), "w", format="mp4") as dst:
        in_stream = src.streams.video[0]
        codec = in_stream.codec_context.name
        extradata = bytes(in_stream.codec_context.extradata or b"")
        length_size = nal_length_size(extradata, codec)
        assert length_size, "inject_units needs a length-prefixed source"
        out_stream = dst.add_stream_from_template(in_stream)
        if record_unit is not None:
            out_stream.codec_context.extradata = with_record_unit(extradata, codec, record_unit)
        for packet in src.demux(in_stream):
            if packet.size == 0 and packet.dts is None:
                continue
            data = to_length_prefixed([*units, *split_nal_units(bytes(packet), length_size)], length_size)
            new = av.Packet(data)
            new.pts, new.dts, new.time_base, new.is_keyframe = packet.pts, packet.dts, packet.time_base, \
                packet.is_keyframe
            new.stream = out_stream
            dst.mux(new)
    return target


def strict_decode(path: Path) -> list[np.ndarray]:
    """Every frame's luma, decoded with FFmpeg reporting any error it detects as an exception."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"err_detect": "explode"}
        return [frame.to_ndarray(format="gray") for frame in container.decode(stream)]


def record_of(path: Path) -> tuple[str, bytes]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.name, bytes(ctx.extradata or b"")


def record_holds(path: Path, unit: bytes) -> bool:
    """The track's avcC/hvcC holds ``unit`` as one of its entries (16-bit length, then the unit)."""
    _, extradata = record_of(path)
    return len(unit).to_bytes(2, "big") + unit in extradata
