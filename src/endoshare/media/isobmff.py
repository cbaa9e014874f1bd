"""A small reader of ISO base media (MP4/MOV) boxes: creation times and where metadata hides.

FFmpeg shows ``creation_time`` only when it is set, and never shows the per-track tkhd/mdhd times, so
we read them from the boxes directly to check that our outputs carry zero everywhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: Boxes that only contain other boxes (we descend into them).
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"dinf", b"mvex", b"moof", b"traf"}
_TIMED = {b"mvhd", b"tkhd", b"mdhd"}
#: Seconds from 1904-01-01 (the MP4 epoch) to 1970-01-01.
MP4_EPOCH_OFFSET = 2082844800


@dataclass(frozen=True)
class BoxTime:
    box: str
    path: str
    creation: int
    modification: int


def _walk(fh: BinaryIO, start: int, end: int, parent: str) -> Iterator[tuple[bytes, str, int, int, int]]:
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head)
        header = 8
        if size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return
            size = struct.unpack(">Q", large)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        path = f"{parent}/{kind.decode('latin-1')}"
        yield kind, path, pos, size, header
        if kind in _CONTAINERS:
            yield from _walk(fh, pos + header, pos + size, path)
        elif kind == b"meta":
            # 'meta' is a full box (4 bytes version/flags) in MP4, a plain container in QuickTime.
            fh.seek(pos + header)
            first = fh.read(8)
            inner = 0 if first[4:8] == b"hdlr" else 4
            yield from _walk(fh, pos + header + inner, pos + size, path)
        pos += size


def iter_boxes(fh: BinaryIO, size: int) -> Iterator[tuple[bytes, str, int, int, int]]:
    """Every box of an open file of ``size`` bytes, depth first: (type, path like /moov/udta/XMP_,
    offset, size, header size)."""
    return _walk(fh, 0, size, "")


def box_times(path: str | Path) -> list[BoxTime]:
    """Creation/modification times (seconds since 1904, 0 when unset) of every mvhd, tkhd and mdhd."""
    p = Path(path)
    times = []
    with p.open("rb") as fh:
        total = p.stat().st_size
        for kind, bpath, offset, _size, header in _walk(fh, 0, total, ""):
            if kind not in _TIMED:
                continue
            fh.seek(offset + header)
            version = fh.read(4)[:1]
            if version == b"\x01":
                raw = fh.read(16)
                if len(raw) == 16:
                    creation, modification = struct.unpack(">QQ", raw)
                    times.append(BoxTime(kind.decode(), bpath, creation, modification))
            else:
                raw = fh.read(8)
                if len(raw) == 8:
                    creation, modification = struct.unpack(">II", raw)
                    times.append(BoxTime(kind.decode(), bpath, creation, modification))
    return times


def looks_like_isobmff(path: str | Path) -> bool:
    with Path(path).open("rb") as fh:
        head = fh.read(12)
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def has_top_level_box(path: str | Path, kind: bytes) -> bool:
    """True when the file's top level holds a box of this type (a recording cut short lacks its 'moov')."""
    p = Path(path)
    with p.open("rb") as fh:
        return any(k == kind and "/" not in bpath[1:] for k, bpath, *_ in _walk(fh, 0, p.stat().st_size, ""))


def video_sample_counts(path: str | Path) -> list[int]:
    """Samples stored in each video track ('vide' handler), from its stsz/stz2 box: every sample in the
    file, whatever an edit list shows.  Empty when the file has no such table (fragmented MP4)."""
    p = Path(path)
    counts: list[int] = []
    handler: bytes | None = None
    count: int | None = None
    with p.open("rb") as fh:
        for kind, bpath, offset, _size, header in _walk(fh, 0, p.stat().st_size, ""):
            if kind == b"trak":
                if handler == b"vide" and count is not None:
                    counts.append(count)
                handler, count = None, None
            elif kind == b"hdlr" and bpath.endswith("/mdia/hdlr"):
                fh.seek(offset + header + 8)            # version/flags, pre_defined
                handler = fh.read(4)
            elif kind in (b"stsz", b"stz2"):
                fh.seek(offset + header + 8)            # version/flags, sample_size (or reserved + field size)
                raw = fh.read(4)
                count = struct.unpack(">I", raw)[0] if len(raw) == 4 else None
    if handler == b"vide" and count is not None:
        counts.append(count)
    return counts
