"""What the scrubber removes from a media file, found without changing it (for ``endoshare inspect``).

:func:`find_removable` reads a file and lists, as frozen :class:`Finding` records, the places where
identifying text hides that a shared output never carries:

* ``mpegts_service``: the MPEG-TS service name and provider (SDT), often the recorder's or hospital's;
* ``mpeg2_user_data``: MPEG-2 video user data, including ATSC A53 closed captions (``GA94``);
* ``subtitle_text``: the text of subtitle streams (and the packet count of bitmap subtitles);
* ``mp4_box``: XMP, ``uuid``, ``free`` and ``skip`` boxes of MP4/MOV files, whose bytes any tool may fill
  (empty or zero-filled ones are not listed);
* ``nal_units``: H.264/HEVC NAL units outside the bitstream allow-list (SEI, filler, reserved,
  unspecified types, other layers), in the samples (edit lists ignored) and in the avcC/hvcC record.

Each finding has a short preview of the printable text it carries.  Container tags, chapters, SEI user
data payloads and MP4 times are in :class:`endoshare.media.probe.MediaInfo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from ..errors import UnreadableMediaError
from . import isobmff
from .nal import ALLOWED_NAL_TYPES, disallowed_record_units, disallowed_units, nal_length_size, nal_type
from .probe import iter_video_packets, open_input

#: Characters of printable text shown per finding.
PREVIEW_CHARS = 120
#: Printable ASCII runs shorter than this are noise in binary data, not text.
MIN_TEXT_RUN = 4
#: Boxes whose content is free for any writer to fill.
FREE_FORM_BOXES = frozenset({b"XMP_", b"uuid", b"free", b"skip"})
#: MPEG-TS bytes read looking for the service description table.
SDT_SCAN_BYTES = 8 << 20
#: Subtitle codecs that carry pictures, not text: only their packets are counted.
BITMAP_SUBTITLES = frozenset({"dvd_subtitle", "dvb_subtitle", "hdmv_pgs_subtitle", "xsub"})
_TEXT_RUN = re.compile(rb"[\x20-\x7e]{%d,}" % MIN_TEXT_RUN)


@dataclass(frozen=True)
class Finding:
    kind: str
    #: Where in the file: a stream, a box path, a NAL unit type.
    where: str
    count: int
    #: Printable text it carries, shortened ("" when none).
    preview: str

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "where": self.where, "count": self.count, "preview": self.preview}


def printable_preview(data: bytes, limit: int = PREVIEW_CHARS) -> str:
    """The printable ASCII runs of ``data``, joined by " | " and cut to ``limit`` characters."""
    text = " | ".join(run.decode("ascii") for run in _TEXT_RUN.findall(data))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def find_removable(path: Path) -> tuple[Finding, ...]:
    """Everything in ``path`` that the scrubber removes and :func:`probe` does not already show."""
    path = Path(path)
    findings: list[Finding] = []
    try:
        with open_input(path) as container:
            if container.format.name == "mpegts":
                findings += _service_description(path)
            for stream in container.streams:
                if stream.type == "subtitle":
                    findings += _subtitle_text(path, stream.index)
            video = next((s for s in container.streams if s.type == "video"), None)
            codec = video.codec_context.name if video is not None else None
    except av.error.FFmpegError as exc:
        raise UnreadableMediaError(f"{path} is damaged ({exc}); copy it again from the recorder.", path=path) from None
    if video is not None and codec in ALLOWED_NAL_TYPES:
        findings += _nal_units(path, codec)
    elif video is not None and codec == "mpeg2video":
        findings += _mpeg2_user_data(path)
    if isobmff.looks_like_isobmff(path):
        findings += _free_form_boxes(path)
    return tuple(findings)


def _nal_units(path: Path, codec: str) -> list[Finding]:
    by_type: dict[tuple[str, int], list[str]] = {}
    counts: dict[tuple[str, int], int] = {}

    def add(where: str, unit: bytes) -> None:
        key = (where, nal_type(unit, codec))
        counts[key] = counts.get(key, 0) + 1
        texts = by_type.setdefault(key, [])
        if len(texts) < 8:
            preview = printable_preview(unit[1 if codec == "h264" else 2:])
            if preview and preview not in texts:
                texts.append(preview)

    with open_input(path, {"ignore_editlist": "1"}) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        for unit in disallowed_record_units(extradata, codec):
            add("record", unit)
        length_size = nal_length_size(extradata, codec)
        for packet in iter_video_packets(container, stream):
            for unit in disallowed_units(bytes(packet), codec, length_size):
                add("samples", unit)
    name = "H.264" if codec == "h264" else "HEVC"
    return [Finding("nal_units", f"{name} NAL type {kind} in the {'avcC/hvcC record' if where == 'record' else where}",
                    counts[(where, kind)], " | ".join(by_type[(where, kind)])[:PREVIEW_CHARS])
            for where, kind in sorted(counts)]


def _mpeg2_user_data(path: Path) -> list[Finding]:
    """MPEG-2 user_data (start code 0x1B2) in the video packets; ATSC A53 captions start with GA94."""
    count = captions = 0
    texts: list[str] = []
    with open_input(path) as container:
        stream = container.streams.video[0]
        for packet in iter_video_packets(container, stream):
            data = bytes(packet)
            start = data.find(b"\x00\x00\x01\xb2")
            while start >= 0:
                end = data.find(b"\x00\x00\x01", start + 4)
                payload = data[start + 4:end if end >= 0 else len(data)]
                if payload.startswith(b"GA94"):
                    captions += 1
                else:
                    count += 1
                text = printable_preview(payload[4:] if payload.startswith(b"GA94") else payload)
                if text and text not in texts and len(texts) < 8:
                    texts.append(text)
                start = data.find(b"\x00\x00\x01\xb2", start + 4)
    found = []
    if captions:
        found.append(Finding("mpeg2_user_data", "A53 closed captions (GA94 user data)", captions,
                             " | ".join(texts)[:PREVIEW_CHARS]))
    if count:
        found.append(Finding("mpeg2_user_data", "MPEG-2 user data", count, " | ".join(texts)[:PREVIEW_CHARS]))
    return found


def _subtitle_text(path: Path, index: int) -> list[Finding]:
    texts: list[str] = []
    count = 0
    with open_input(path) as container:
        stream = container.streams[index]
        codec = stream.codec_context.name
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            data = bytes(packet)
            if codec == "mov_text":
                data = data[2:2 + int.from_bytes(data[:2], "big")]
            text = data.decode("utf-8", "replace").strip() if codec not in BITMAP_SUBTITLES else ""
            if text and len(texts) < 8:
                texts.append(" ".join(text.split()))
    return [Finding("subtitle_text", f"stream {index} ({codec})", count,
                    " | ".join(texts)[:PREVIEW_CHARS])] if count else []


def _free_form_boxes(path: Path) -> list[Finding]:
    found = []
    with path.open("rb") as fh:
        total = path.stat().st_size
        for kind, box_path, offset, size, header in isobmff.iter_boxes(fh, total):
            if kind not in FREE_FORM_BOXES:
                continue
            fh.seek(offset + header)
            content = fh.read(min(size - header, 1 << 20))
            if not content.strip(b"\x00"):
                continue  # an empty or zero-filled placeholder (FFmpeg writes one) carries nothing
            found.append(Finding("mp4_box", f"{box_path} ({size} bytes)", 1, printable_preview(content)))
    return found


def _service_description(path: Path) -> list[Finding]:
    """Service provider and service names of the MPEG-TS service description table (PID 0x11)."""
    with path.open("rb") as fh:
        data = fh.read(SDT_SCAN_BYTES)
    packet_size = next((size for size in (188, 192, 204) for start in range(size)
                        if len(data) > start + 3 * size and
                        all(data[start + n * size] == 0x47 for n in range(3))), None)
    if packet_size is None:
        return []
    start = next(s for s in range(packet_size) if data[s] == 0x47 and data[s + packet_size] == 0x47)
    section = bytearray()
    names: list[tuple[str, str]] = []
    for pos in range(start, len(data) - 187, packet_size):
        packet = data[pos:pos + 188]
        if packet[0] != 0x47 or ((packet[1] & 0x1F) << 8 | packet[2]) != 0x11:
            continue
        payload_at = 4
        if packet[3] & 0x20:
            payload_at += 1 + packet[4]
        if not packet[3] & 0x10 or payload_at >= 188:
            continue
        payload = packet[payload_at:]
        if packet[1] & 0x40:
            section = bytearray(payload[1 + payload[0]:])
        elif section:
            section += payload
        else:
            continue
        if len(section) >= 3 and len(section) >= 3 + ((section[1] & 0x0F) << 8 | section[2]):
            if section[0] == 0x42:
                names = _sdt_names(bytes(section[:3 + ((section[1] & 0x0F) << 8 | section[2])]))
                break
            section = bytearray()
    found = []
    for provider, service in names:
        if provider:
            found.append(Finding("mpegts_service", "service provider (SDT)", 1, provider[:PREVIEW_CHARS]))
        if service:
            found.append(Finding("mpegts_service", "service name (SDT)", 1, service[:PREVIEW_CHARS]))
    return found


def _dvb_text(raw: bytes) -> str:
    """A DVB string, without its character-table prefix, as printable text."""
    if raw[:1] and raw[0] < 0x20:
        raw = raw[3:] if raw[0] == 0x10 else raw[1:]
    return "".join(ch if ch.isprintable() else "." for ch in raw.decode("latin-1"))


def _sdt_names(section: bytes) -> list[tuple[str, str]]:
    names = []
    pos = 11
    end = len(section) - 4                       # CRC32
    while pos + 5 <= end:
        loop_length = (section[pos + 3] & 0x0F) << 8 | section[pos + 4]
        descriptors = section[pos + 5:pos + 5 + loop_length]
        pos += 5 + loop_length
        at = 0
        while at + 2 <= len(descriptors):
            tag, length = descriptors[at], descriptors[at + 1]
            body = descriptors[at + 2:at + 2 + length]
            at += 2 + length
            if tag == 0x48 and len(body) >= 3:
                provider_length = body[1]
                provider = body[2:2 + provider_length]
                rest = body[2 + provider_length:]
                service = rest[1:1 + rest[0]] if rest else b""
                names.append((_dvb_text(provider), _dvb_text(service)))
    return names
