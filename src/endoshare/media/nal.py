"""H.264 / HEVC NAL-unit reading, enough to find SEI messages that carry user data.

SEI user data (H.264 NAL type 6, HEVC 39/40; payload types 4 "registered ITU-T T.35", e.g. closed
captions, and 5 "unregistered", free bytes behind a UUID) survives a stream copy and is where some
recorders and encoders write text.  We only *read* here; removal is done by FFmpeg's ``filter_units``
bitstream filter (see :mod:`endoshare.media.scrub`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

H264_SEI = 6
HEVC_PREFIX_SEI = 39
HEVC_SUFFIX_SEI = 40
SEI_USER_DATA_REGISTERED = 4
SEI_USER_DATA_UNREGISTERED = 5


@dataclass(frozen=True)
class SeiUserData:
    payload_type: int
    #: 16-byte UUID of an unregistered payload, hex; empty for registered (T.35) payloads.
    uuid: str
    #: The payload bytes after the UUID / country code, shown as text where printable.
    text: str
    size: int


def nal_length_size(extradata: bytes | None, codec: str) -> int | None:
    """Bytes of the NAL length prefix in avcC/hvcC extradata, or None when the stream is Annex B."""
    if not extradata:
        return None
    if extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01":
        return None
    if codec == "h264" and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    if codec == "hevc" and len(extradata) >= 22:
        return (extradata[21] & 0x03) + 1
    return None


def split_nal_units(data: bytes, length_size: int | None) -> Iterator[bytes]:
    """NAL units of one access unit, from length-prefixed (MP4/MKV) or Annex B (TS) framing."""
    if length_size:
        pos = 0
        while pos + length_size <= len(data):
            size = int.from_bytes(data[pos:pos + length_size], "big")
            pos += length_size
            if size <= 0 or pos + size > len(data):
                return
            yield data[pos:pos + size]
            pos += size
        return
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        unit = data[start:end]
        # A 4-byte start code leaves a trailing zero on the previous unit; trailing zeros are not payload.
        yield unit.rstrip(b"\x00") if n + 1 < len(starts) else unit


def nal_type(unit: bytes, codec: str) -> int:
    if not unit:
        return -1
    return unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F


def is_sei(unit: bytes, codec: str) -> bool:
    kind = nal_type(unit, codec)
    return kind == H264_SEI if codec == "h264" else kind in (HEVC_PREFIX_SEI, HEVC_SUFFIX_SEI)


def _unescape(rbsp: bytes) -> bytes:
    return rbsp.replace(b"\x00\x00\x03", b"\x00\x00")


def _printable(payload: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in payload)


def _sei_number(body: bytes, pos: int) -> tuple[int, int] | None:
    """An SEI payload type or size (a run of 0xFF bytes adding 255 each, then the last byte); with the
    position after it, or None when the message is truncated."""
    value = 0
    while pos < len(body) and body[pos] == 0xFF:
        value += 255
        pos += 1
    if pos >= len(body):
        return None
    return value + body[pos], pos + 1


def sei_user_data(unit: bytes, codec: str) -> list[SeiUserData]:
    """User-data payloads in one SEI NAL unit (other SEI payload types are skipped)."""
    header = 1 if codec == "h264" else 2
    body = _unescape(unit[header:])
    found: list[SeiUserData] = []
    pos = 0
    while pos < len(body) and body[pos:] not in (b"\x80", b""):
        header_fields = _sei_number(body, pos)
        if header_fields is None:
            break
        payload_type, pos = header_fields
        header_fields = _sei_number(body, pos)
        if header_fields is None:
            break
        size, pos = header_fields
        payload = body[pos:pos + size]
        pos += size
        if payload_type == SEI_USER_DATA_UNREGISTERED:
            found.append(SeiUserData(payload_type, payload[:16].hex(), _printable(payload[16:]), size))
        elif payload_type == SEI_USER_DATA_REGISTERED:
            found.append(SeiUserData(payload_type, "", _printable(payload), size))
    return found


# --------------------------------------------------------------------------------------------------
# Parameter sets and avcC, for splicing re-encoded H.264 pictures into a stream-copied track

H264_IDR = 5
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9


def read_ue(data: bytes, bit: int) -> tuple[int, int]:
    """One unsigned Exp-Golomb number starting at ``bit``; returns (value, next bit)."""
    zeros = 0
    while not data[(bit + zeros) // 8] >> (7 - (bit + zeros) % 8) & 1:
        zeros += 1
        if zeros > 31:
            raise ValueError("invalid Exp-Golomb code")
    bit += zeros + 1
    value = 0
    for _ in range(zeros):
        value = value << 1 | (data[bit // 8] >> (7 - bit % 8) & 1)
        bit += 1
    return (1 << zeros) - 1 + value, bit


def h264_sps_id(sps: bytes) -> int:
    """seq_parameter_set_id of an SPS NAL unit (header byte included)."""
    return read_ue(_unescape(sps[4:]), 0)[0]


@dataclass(frozen=True)
class AvcConfig:
    """The parts of an avcC box (AVCDecoderConfigurationRecord) that splicing needs."""

    profile: int
    compatibility: int
    level: int
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    #: Bytes after the PPS list (High-profile chroma/bit-depth fields and SPS extensions), kept as is.
    tail: bytes

    @classmethod
    def parse(cls, data: bytes) -> "AvcConfig":
        if len(data) < 7 or data[0] != 1:
            raise ValueError("not an avcC record")
        pos = 6
        sps = []
        for _ in range(data[5] & 0x1F):
            size = int.from_bytes(data[pos:pos + 2], "big")
            sps.append(bytes(data[pos + 2:pos + 2 + size]))
            pos += 2 + size
        pps = []
        count = data[pos]
        pos += 1
        for _ in range(count):
            size = int.from_bytes(data[pos:pos + 2], "big")
            pps.append(bytes(data[pos + 2:pos + 2 + size]))
            pos += 2 + size
        return cls(data[1], data[2], data[3], (data[4] & 0x03) + 1, tuple(sps), tuple(pps), bytes(data[pos:]))

    def with_parameter_sets(self, sps: bytes, pps: bytes) -> "AvcConfig":
        return AvcConfig(self.profile, self.compatibility, self.level, self.length_size,
                         (*self.sps, sps), (*self.pps, pps), self.tail)

    def serialize(self) -> bytes:
        out = bytearray([1, self.profile, self.compatibility, self.level, 0xFC | (self.length_size - 1),
                         0xE0 | len(self.sps)])
        for unit in self.sps:
            out += len(unit).to_bytes(2, "big") + unit
        out.append(len(self.pps))
        for unit in self.pps:
            out += len(unit).to_bytes(2, "big") + unit
        return bytes(out + self.tail)


def to_length_prefixed(units: list[bytes], length_size: int) -> bytes:
    return b"".join(len(u).to_bytes(length_size, "big") + u for u in units)


HEVC_VPS = 32
HEVC_SPS = 33
HEVC_PPS = 34
HEVC_AUD = 35
HEVC_IDR_TYPES = (19, 20)
#: Offset of numOfArrays in an hvcC record (HEVCDecoderConfigurationRecord).
_HVCC_ARRAYS = 22


def hvcc_parameter_sets(data: bytes) -> tuple[bytes, ...]:
    """The VPS, SPS and PPS NAL units listed in an hvcC record, in order."""
    if len(data) <= _HVCC_ARRAYS or data[0] != 1:
        raise ValueError("not an hvcC record")
    units = []
    pos = _HVCC_ARRAYS + 1
    for _ in range(data[_HVCC_ARRAYS]):
        kind = data[pos] & 0x3F
        count = int.from_bytes(data[pos + 1:pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(data[pos:pos + 2], "big")
            if kind in (HEVC_VPS, HEVC_SPS, HEVC_PPS):
                units.append(bytes(data[pos + 2:pos + 2 + size]))
            pos += 2 + size
    return tuple(units)


def hvcc_for_inband_track(data: bytes) -> bytes:
    """The same hvcC holding only its VPS/SPS/PPS arrays (SEI arrays, where encoders write their
    version, are dropped), each marked incomplete: parameter sets may also come in-band, as the
    'hev1' sample entry allows, so that a re-encoded group can bring its own."""
    out = bytearray(data[:_HVCC_ARRAYS + 1])
    kept = 0
    pos = _HVCC_ARRAYS + 1
    for _ in range(data[_HVCC_ARRAYS]):
        kind = data[pos] & 0x3F
        count = int.from_bytes(data[pos + 1:pos + 3], "big")
        end = pos + 3
        for _ in range(count):
            end += 2 + int.from_bytes(data[end:end + 2], "big")
        if kind in (HEVC_VPS, HEVC_SPS, HEVC_PPS):
            out += bytes([kind]) + data[pos + 1:end]
            kept += 1
        pos = end
    out[_HVCC_ARRAYS] = kept
    return bytes(out)


def is_length_prefixed(data: bytes, length_size: int) -> bool:
    """True when ``data`` is exactly a run of length-prefixed NAL units with valid headers (MP4/MKV
    framing).  Annex B data stored in an MP4 by mistake fails this: its start code reads as a length
    of 1, which only FFmpeg's lenient H.264 decoder tolerates."""
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            return False
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size < 2 or pos + size > len(data) or data[pos] & 0x80:
            return False
        pos += size
    return pos == len(data) and pos > 0


def annexb_to_length_prefixed(data: bytes, length_size: int) -> bytes:
    return to_length_prefixed(list(split_nal_units(data, None)), length_size)
