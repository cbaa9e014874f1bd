"""H.264 / HEVC NAL units: the bitstream allow-list, and reading what it removes.

Only the NAL unit types a decoder needs to rebuild the pictures pass into a shared output
(:data:`ALLOWED_NAL_TYPES`); everything else is dropped, whatever it is: SEI (H.264 type 6, HEVC 39/40,
where recorders write user data and closed captions; an H.264 recovery point alone is rewritten from its
fields, :func:`h264_recovery_point_sei`), filler, access unit delimiters, reserved and
unspecified types, and units a plain decoder skips (SVC/MVC extensions, HEVC layers above 0).  The same
definition is used by the scrubber (:func:`scrub_access_unit`, :func:`clean_record`) and by the
verifier (:func:`disallowed_units`, :func:`record_units`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
        # A 4-byte start code leaves a trailing zero on the previous unit, and a stream may pad its last unit
        # with trailing_zero_8bits: they are not payload (a NAL unit never ends in a zero byte).
        yield unit.rstrip(b"\x00")


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


def _sei_messages(unit: bytes, codec: str) -> Iterator[tuple[int, int, bytes]]:
    """(payload type, stated payload size, payload) of each message in one SEI NAL unit, unescaped; the
    last payload may be shorter than stated (a cut message), and a message cut in its header ends the list."""
    body = _unescape(unit[1 if codec == "h264" else 2:])
    pos = 0
    while pos < len(body) and body[pos:] != b"\x80":
        header_fields = _sei_number(body, pos)
        if header_fields is None:
            return
        payload_type, pos = header_fields
        header_fields = _sei_number(body, pos)
        if header_fields is None:
            return
        size, pos = header_fields
        yield payload_type, size, body[pos:pos + size]
        pos += size


def sei_user_data(unit: bytes, codec: str) -> list[SeiUserData]:
    """User-data payloads in one SEI NAL unit (other SEI payload types are skipped)."""
    found: list[SeiUserData] = []
    for payload_type, size, payload in _sei_messages(unit, codec):
        if payload_type == SEI_USER_DATA_UNREGISTERED:
            found.append(SeiUserData(payload_type, payload[:16].hex(), _printable(payload[16:]), size))
        elif payload_type == SEI_USER_DATA_REGISTERED:
            found.append(SeiUserData(payload_type, "", _printable(payload), size))
    return found


SEI_RECOVERY_POINT = 6


def _escape(rbsp: bytes) -> bytes:
    """Emulation prevention: a 3 after every two zero bytes followed by a byte of 0 to 3."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def h264_recovery_point_sei(unit: bytes) -> bytes | None:
    """An H.264 SEI unit rebuilt with nothing but its recovery point message, or None when it has none
    (or it cannot be read).

    The recovery point is what marks an open-GOP I picture as a place to start decoding: without it
    FFmpeg's MP4 muxer no longer lists the picture as a sync sample, and players cannot seek to it.  Its
    four fields are numbers and flags, rewritten here from their values (never copied), so the message
    can carry nothing else; every other SEI message (user data, captions, timecodes) is dropped."""
    try:
        payload = next((p for t, size, p in _sei_messages(unit, "h264")
                        if t == SEI_RECOVERY_POINT and len(p) == size), None)
        if payload is None:
            return None
        frame_count, bit = read_ue(payload, 0)
        flags = payload[bit // 8] << 8 | (payload[bit // 8 + 1] if bit // 8 + 1 < len(payload) else 0)
        tail = flags >> (12 - bit % 8) & 0x0F           # exact_match, broken_link, changing_slice_group_idc
    except (ValueError, IndexError):
        return None
    if frame_count > 65535:
        return None
    # recovery_frame_cnt as Exp-Golomb, the four bits, then the payload's byte alignment (a one, zeros).
    code = frame_count + 1
    bits = "0" * (code.bit_length() - 1) + format(code, "b") + format(tail, "04b")
    bits += "1" + "0" * (-(len(bits) + 1) % 8)
    body = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return bytes([H264_SEI]) + _escape(bytes([SEI_RECOVERY_POINT, len(body)]) + body + b"\x80")


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
    def parse(cls, data: bytes) -> AvcConfig:
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

    def with_parameter_sets(self, sps: bytes, pps: bytes) -> AvcConfig:
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
    """The VPS, SPS and PPS NAL units listed in an hvcC record, in order (judged by their own NAL
    header, not by the array they claim to be in)."""
    if len(data) <= _HVCC_ARRAYS or data[0] != 1:
        raise ValueError("not an hvcC record")
    return tuple(u for u in record_units(data, "hevc").units if unit_allowed(u, "hevc", RECORD_TYPES["hevc"]))


def hvcc_for_inband_track(data: bytes) -> bytes:
    """The same hvcC holding only its VPS/SPS/PPS (see :func:`clean_hvcc`), each array marked
    incomplete: parameter sets may also come in-band, as the 'hev1' sample entry allows, so that a
    re-encoded group can bring its own."""
    return clean_hvcc(data, complete=False)


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


# --------------------------------------------------------------------------------------------------
# The bitstream allow-list

#: H.264 NAL unit types kept in shared outputs: coded slices (1 non-IDR, 5 IDR), SPS 7, PPS 8, end of
#: sequence 10 and end of stream 11 (kept as a bare header byte).  Dropped among others: data
#: partitions 2-4 (Extended profile; FFmpeg cannot decode them, so they could never be verified), SEI 6,
#: access unit delimiter 9 (an MP4 sample is already one access unit), filler 12, SPS extension 13 and
#: auxiliary slices 19 (alpha planes, ignored by decoders), SVC/MVC units 14, 15, 20, 21 (a plain
#: decoder shows the base layer without them), reserved 16-18, 22-23 and unspecified 0, 24-31.
H264_ALLOWED_TYPES = frozenset({1, 5, 7, 8, 10, 11})
#: HEVC NAL unit types kept: VCL 0-9 (trailing, TSA, STSA, RADL, RASL pictures) and 16-21 (BLA, IDR,
#: CRA), VPS 32, SPS 33, PPS 34, end of sequence 36 and end of bitstream 37 (kept as a bare header: an
#: end of sequence changes how the next CRA's leading pictures are decoded).  Dropped: reserved VCL
#: 10-15 and 22-31, access unit delimiter 35, filler 38, SEI 39/40, reserved 41-47, unspecified 48-63,
#: and every unit of a layer above 0 (a single-layer decoder skips those).
HEVC_ALLOWED_TYPES = frozenset({*range(0, 10), *range(16, 22), 32, 33, 34, 36, 37})
ALLOWED_NAL_TYPES = {"h264": H264_ALLOWED_TYPES, "hevc": HEVC_ALLOWED_TYPES}
#: Allowed types whose payload is empty: they are rewritten as their bare NAL header.
HEADER_ONLY_TYPES = {"h264": frozenset({10, 11}), "hevc": frozenset({36, 37})}
#: The only types a parameter-set record (avcC / hvcC) may hold.
RECORD_TYPES = {"h264": frozenset({H264_SPS, H264_PPS}), "hevc": frozenset({HEVC_VPS, HEVC_SPS, HEVC_PPS})}


def _header_size(codec: str) -> int:
    return 1 if codec == "h264" else 2


def unit_allowed(unit: bytes, codec: str, types: frozenset[int] | None = None) -> bool:
    """True when ``unit`` is a well-formed NAL unit header of an allowed type (``types``, by default the
    codec's allow-list): forbidden bit clear and, for HEVC, base layer with a valid temporal id."""
    if len(unit) < _header_size(codec) or unit[0] & 0x80:
        return False
    if codec == "hevc" and (((unit[0] & 1) << 5 | unit[1] >> 3) != 0 or unit[1] & 0x07 == 0):
        return False
    return nal_type(unit, codec) in (ALLOWED_NAL_TYPES[codec] if types is None else types)


def allowed_unit(unit: bytes, codec: str) -> bytes | None:
    """``unit`` as it may appear in a shared output, or None when it must be dropped."""
    if codec == "h264" and len(unit) > 1 and unit[0] & 0x9F == H264_SEI:
        return h264_recovery_point_sei(unit)
    if not unit_allowed(unit, codec):
        return None
    kind = nal_type(unit, codec)
    if kind in HEADER_ONLY_TYPES[codec]:
        return bytes([kind]) if codec == "h264" else bytes([kind << 1, 1])
    return unit


def _frame(units: Iterable[bytes], length_size: int | None) -> bytes:
    if length_size:
        return to_length_prefixed(list(units), length_size)
    return b"".join(b"\x00\x00\x00\x01" + u for u in units)


def scrub_access_unit(data: bytes, codec: str, length_size: int | None) -> bytes:
    """One sample rebuilt from its allowed NAL units only, in the same framing (length-prefixed with
    ``length_size`` bytes, or Annex B when None).  Bytes outside any NAL unit are dropped too."""
    kept = (allowed_unit(u, codec) for u in split_nal_units(data, length_size))
    return _frame((u for u in kept if u is not None), length_size)


def h264_pps_hides_slices(pps: bytes) -> bool:
    """True when an H.264 PPS lets pictures carry slices a decoder skips: redundant slices
    (redundant_pic_cnt_present_flag; FFmpeg decodes only the primary ones) or slice groups (FMO, which
    FFmpeg does not decode), or when the PPS cannot be read."""
    try:
        body = _unescape(pps[1:])
        bit = read_ue(body, read_ue(body, 0)[1])[1]         # pic_parameter_set_id, seq_parameter_set_id
        bit += 2                                             # entropy coding mode, bottom field POC flag
        slice_groups, bit = read_ue(body, bit)
        if slice_groups:
            return True
        for _ in range(2):                                   # default reference list sizes
            bit = read_ue(body, bit)[1]
        bit += 3                                             # weighted prediction flags
        for _ in range(3):                                   # QP / QS / chroma QP offsets, se(v)
            bit = read_ue(body, bit)[1]
        bit += 2                                             # deblocking control, constrained intra
        return bool(body[bit // 8] >> (7 - bit % 8) & 1)
    except (ValueError, IndexError):
        return True


def disallowed_units(data: bytes, codec: str, length_size: int | None) -> list[bytes]:
    """The NAL units of one sample that the allow-list does not admit (or that are not in their
    canonical form), and H.264 PPS units that let slices be skipped, for the verifier and ``inspect``."""
    return [u for u in split_nal_units(data, length_size)
            if allowed_unit(u, codec) != u or (codec == "h264" and nal_type(u, codec) == H264_PPS
                                               and h264_pps_hides_slices(u))]


# --------------------------------------------------------------------------------------------------
# Parameter-set records (avcC / hvcC / Annex B extradata)


@dataclass(frozen=True)
class RecordUnits:
    """What a parameter-set record holds: every NAL unit (with the array it sits in) and how many bytes
    lie outside the record's known fields."""

    units: tuple[bytes, ...]
    leftover_bytes: int


def _read_units(data: bytes, pos: int, count: int) -> tuple[list[bytes], int] | None:
    units = []
    for _ in range(count):
        if pos + 2 > len(data):
            return None
        size = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 + size > len(data):
            return None
        units.append(bytes(data[pos + 2:pos + 2 + size]))
        pos += 2 + size
    return units, pos


#: H.264 profiles whose avcC carries no chroma format, bit depths or SPS extensions after the PPS list
#: (Baseline, Main, Extended); every other profile has them, as FFmpeg writes them.
_AVCC_SHORT_PROFILES = frozenset({66, 77, 88})


def record_units(extradata: bytes, codec: str) -> RecordUnits:
    """Every NAL unit of an avcC/hvcC record or of Annex B extradata."""
    data = bytes(extradata or b"")
    if not data:
        return RecordUnits((), 0)
    if data[0] != 1:
        return RecordUnits(tuple(split_nal_units(data, None)), 0)
    if codec == "h264":
        if len(data) < 7:
            return RecordUnits((), len(data))
        read = _read_units(data, 6, data[5] & 0x1F)
        if read is None or read[1] >= len(data):
            return RecordUnits(tuple(read[0]) if read else (), len(data))
        sps, pos = read
        read = _read_units(data, pos + 1, data[pos])
        if read is None:
            return RecordUnits(tuple(sps), len(data) - pos)
        pps, pos = read
        units = [*sps, *pps]
        if pos + 4 <= len(data) and data[1] not in _AVCC_SHORT_PROFILES:
            read = _read_units(data, pos + 4, data[pos + 3])
            if read is not None:
                units += read[0]
                pos = read[1]
        return RecordUnits(tuple(units), len(data) - pos)
    if len(data) <= _HVCC_ARRAYS:
        return RecordUnits((), len(data))
    units = []
    pos = _HVCC_ARRAYS + 1
    for _ in range(data[_HVCC_ARRAYS]):
        if pos + 3 > len(data):
            return RecordUnits(tuple(units), len(data) - pos)
        read = _read_units(data, pos + 3, int.from_bytes(data[pos + 1:pos + 3], "big"))
        if read is None:
            return RecordUnits(tuple(units), len(data) - pos)
        units += read[0]
        pos = read[1]
    return RecordUnits(tuple(units), len(data) - pos)


def disallowed_record_units(extradata: bytes, codec: str) -> list[bytes]:
    """Units of a parameter-set record that are not parameter sets, and H.264 PPS units that let slices
    be skipped."""
    return [u for u in record_units(extradata, codec).units
            if not unit_allowed(u, codec, RECORD_TYPES[codec])
            or (codec == "h264" and nal_type(u, codec) == H264_PPS and h264_pps_hides_slices(u))]


def record_hides_slices(extradata: bytes, codec: str) -> bool:
    """True when an H.264 record holds a PPS that lets slices be skipped (see :func:`h264_pps_hides_slices`):
    removing units cannot make such a stream safe to copy."""
    return codec == "h264" and any(unit_allowed(u, codec, frozenset({H264_PPS})) and h264_pps_hides_slices(u)
                                   for u in record_units(extradata, codec).units)


def _h264_chroma_and_depths(sps: bytes) -> tuple[int, int, int]:
    """chroma_format_idc and bit depths (minus 8) of an H.264 SPS; (1, 0, 0) when it does not say."""
    if sps[1] not in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        return 1, 0, 0
    try:
        body = _unescape(sps[4:])
        _, bit = read_ue(body, 0)
        chroma, bit = read_ue(body, bit)
        if chroma == 3:
            bit += 1
        luma, bit = read_ue(body, bit)
        chroma_depth, _ = read_ue(body, bit)
    except (ValueError, IndexError):
        return 1, 0, 0
    return chroma & 3, luma & 7, chroma_depth & 7


def clean_avcc(data: bytes) -> bytes:
    """The avcC record rebuilt from its SPS and PPS units only; its header fields come from the first
    SPS, SPS extensions are dropped, and nothing follows the known fields."""
    found = record_units(data, "h264").units
    sps = [u for u in found if unit_allowed(u, "h264", frozenset({H264_SPS})) and len(u) >= 4]
    pps = [u for u in found if unit_allowed(u, "h264", frozenset({H264_PPS}))]
    if not sps:
        raise ValueError("the avcC record holds no SPS")
    length_size = (data[4] & 0x03) + 1
    tail = b""
    if sps[0][1] not in _AVCC_SHORT_PROFILES:
        chroma, luma, chroma_depth = _h264_chroma_and_depths(sps[0])
        tail = bytes([0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth, 0])
    return AvcConfig(sps[0][1], sps[0][2], sps[0][3], length_size, tuple(sps[:31]), tuple(pps[:255]),
                     tail).serialize()


def clean_hvcc(data: bytes, complete: bool | None = None) -> bytes:
    """The hvcC record rebuilt with one array each of VPS, SPS and PPS units (by their real NAL type),
    its profile/tier/level copied from the first SPS and the optional hints (segmentation, parallelism,
    frame rate) cleared.  ``complete`` sets array_completeness; None keeps the source's."""
    if len(data) <= _HVCC_ARRAYS or data[0] != 1:
        raise ValueError("not an hvcC record")
    found = record_units(data, "hevc").units
    completeness: dict[int, int] = {}
    pos = _HVCC_ARRAYS + 1
    for _ in range(data[_HVCC_ARRAYS]):
        if pos + 3 > len(data):
            break
        completeness.setdefault(data[pos] & 0x3F, data[pos] & 0x80)
        read = _read_units(data, pos + 3, int.from_bytes(data[pos + 1:pos + 3], "big"))
        if read is None:
            break
        pos = read[1]
    header = bytearray(data[:_HVCC_ARRAYS])
    sps = [u for u in found if unit_allowed(u, "hevc", frozenset({HEVC_SPS}))]
    if sps:
        body = _unescape(sps[0][2:])
        if len(body) >= 13:
            header[1:13] = body[1:13]
            sub_layers, nested = (body[0] >> 1 & 7) + 1, body[0] & 1
        else:
            sub_layers, nested = 1, 0
    else:
        sub_layers, nested = 1, 0
    header[13:16] = b"\xf0\x00\xfc"
    header[16] = 0xFC | header[16] & 0x03
    header[17] = 0xF8 | header[17] & 0x07
    header[18] = 0xF8 | header[18] & 0x07
    header[19:21] = b"\x00\x00"
    header[21] = (sub_layers & 7) << 3 | nested << 2 | header[21] & 0x03
    out = bytearray(header)
    arrays = 0
    out.append(0)
    for kind in (HEVC_VPS, HEVC_SPS, HEVC_PPS):
        units = [u for u in found if unit_allowed(u, "hevc", frozenset({kind}))]
        if not units:
            continue
        flag = (0x80 if complete else 0) if complete is not None else completeness.get(kind, 0)
        out += bytes([flag | kind]) + len(units).to_bytes(2, "big")
        for unit in units:
            out += len(unit).to_bytes(2, "big") + unit
        arrays += 1
    out[_HVCC_ARRAYS] = arrays
    return bytes(out)


def clean_record(extradata: bytes | None, codec: str) -> bytes:
    """A parameter-set record holding parameter sets only, in the same form (avcC, hvcC or Annex B)."""
    data = bytes(extradata or b"")
    if not data:
        return b""
    if data[0] != 1:
        return _frame((u for u in split_nal_units(data, None) if unit_allowed(u, codec, RECORD_TYPES[codec])),
                      None)
    return clean_avcc(data) if codec == "h264" else clean_hvcc(data)


class _Bits:
    """A forward reader of an RBSP (emulation prevention already removed)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.bit = data, 0

    def u(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = value << 1 | (self.data[self.bit // 8] >> (7 - self.bit % 8) & 1)
            self.bit += 1
        return value

    def ue(self) -> int:
        value, self.bit = read_ue(self.data, self.bit)
        return value

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value % 2 else -(value // 2)


@dataclass(frozen=True)
class H264SliceSyntax:
    """What an H.264 SPS says about the slice header fields before ``idr_pic_id``."""

    log2_max_frame_num: int
    frame_mbs_only: bool
    separate_colour_plane: bool


_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_slice_syntax(sps: bytes) -> H264SliceSyntax:
    """Read an SPS NAL unit (header byte included) as far as ``frame_mbs_only_flag``.  Raises ValueError
    or IndexError on a malformed SPS."""
    bits = _Bits(_unescape(sps[4:]))
    bits.ue()                                                  # seq_parameter_set_id
    separate = False
    if sps[1] in _H264_HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            separate = bool(bits.u(1))
        bits.ue(), bits.ue(), bits.u(1)                        # bit depths, qpprime_y_zero_transform_bypass
        if bits.u(1):                                          # seq_scaling_matrix_present_flag
            for n in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    last = following = 8
                    for _ in range(16 if n < 6 else 64):
                        if following:
                            following = (last + bits.se() + 256) % 256
                        last = following or last
    log2_max_frame_num = bits.ue() + 4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1), bits.ue(), bits.ue()                 # refs, gaps, width, height
    return H264SliceSyntax(log2_max_frame_num, bool(bits.u(1)), separate)


def h264_pps_sps_id(pps: bytes) -> tuple[int, int]:
    """(pic_parameter_set_id, seq_parameter_set_id) of a PPS NAL unit."""
    bits = _Bits(_unescape(pps[1:]))
    return bits.ue(), bits.ue()


def h264_idr_pic_id(unit: bytes, syntax_by_pps: dict[int, H264SliceSyntax]) -> int | None:
    """``idr_pic_id`` of an H.264 IDR slice NAL unit (None for any other unit, or a slice whose PPS is
    not known).  Two IDR pictures in a row must differ in it (H.264 7.4.3)."""
    if not unit or nal_type(unit, "h264") != H264_IDR:
        return None
    bits = _Bits(_unescape(unit[1:64]))
    bits.ue(), bits.ue()                                       # first_mb_in_slice, slice_type
    syntax = syntax_by_pps.get(bits.ue())
    if syntax is None:
        return None
    if syntax.separate_colour_plane:
        bits.u(2)
    bits.u(syntax.log2_max_frame_num)                          # frame_num
    if not syntax.frame_mbs_only and bits.u(1):                # field_pic_flag
        bits.u(1)                                              # bottom_field_flag
    return bits.ue()


def h264_slice_syntaxes(sps_units: Iterable[bytes], pps_units: Iterable[bytes]) -> dict[int, H264SliceSyntax]:
    """The slice syntax each PPS id refers to, from a track's SPS and PPS units (malformed ones skipped)."""
    by_sps: dict[int, H264SliceSyntax] = {}
    for sps in sps_units:
        try:
            by_sps[h264_sps_id(sps)] = h264_slice_syntax(sps)
        except (ValueError, IndexError):
            continue
    found: dict[int, H264SliceSyntax] = {}
    for pps in pps_units:
        try:
            pps_id, sps_id = h264_pps_sps_id(pps)
        except (ValueError, IndexError):
            continue
        if sps_id in by_sps:
            found[pps_id] = by_sps[sps_id]
    return found


def h264_slice_type(unit: bytes) -> int:
    """slice_type of an H.264 slice NAL unit (0/5 P, 1/6 B, 2/7 I, 3/8 SP, 4/9 SI)."""
    bits = _Bits(_unescape(unit[1:16]))
    bits.ue()                                                  # first_mb_in_slice
    return bits.ue()
