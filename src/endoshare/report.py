"""The audit report written beside each shared output: what was done and checked, with no identifier.

Inputs are described only by their technical parameters (codec, size, rate, frame count): no file
name, no folder, no tag value, no case ID.  JSON files are written through :mod:`endoshare.storage`
(exclusive random temporary name, then an atomic rename).
"""

from __future__ import annotations

import json
import platform
import struct
import zlib
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from . import __version__
from .media.join import JoinPlan
from .storage import PRIVATE_FILE_MODE, write_atomically


def input_summary(plan: JoinPlan) -> list[dict[str, Any]]:
    summary = []
    for number, clip in enumerate(plan.clips, start=1):
        video = clip.info.video
        summary.append({
            "clip": number,
            "container": clip.info.container,
            "codec": video.codec,
            "profile": video.profile,
            "width": video.width,
            "height": video.height,
            "pix_fmt": video.pix_fmt,
            "frame_rate": f"{clip.source_rate.numerator}/{clip.source_rate.denominator}",
            "frames": clip.source_frames,
            "timeline_start_frame": clip.timeline_start,
            "timeline_frames": clip.timeline_frames,
            "streams_dropped": [s.kind for s in clip.info.streams if s.index != video.index],
            "tags_removed": len(clip.info.tags) + sum(len(s.tags) for s in clip.info.streams),
            "chapters_removed": len(clip.info.chapters),
            "sei_user_data_payloads_removed": len(clip.info.sei_user_data),
            "normalised_because": [str(d) for d in clip.differences],
        })
    return summary


def software_versions() -> dict[str, str]:
    return {"endoshare": __version__, "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "python": platform.python_version()}


def json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")


def write_json_atomically(path: Path, data: dict[str, Any], mode: int = PRIVATE_FILE_MODE) -> None:
    write_atomically(path, json_bytes(data), mode)


# --- the timeline picture: the case's length and its hidden spans, nothing else -------------------------

#: 3×5 pixel digits (and ':') for the minute labels: no font file, no text that could carry anything else.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ":": "000010000010000",
}
_BACKGROUND, _BAR, _HIDDEN, _TICK, _TEXT = (255, 255, 255), (120, 170, 120), (210, 30, 40), (60, 60, 60), (20, 20, 20)


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)       # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def timeline_png(total_frames: int, frame_rate: Fraction, spans: Iterable[tuple[int, int]], width: int = 1200,
                 scale: int = 2) -> bytes:
    """A PNG of the whole case: a green bar, its hidden spans (frames ``start <= i < end``) in red, a tick every
    10 seconds and a labelled one every minute.  It holds no identifier: only lengths and times."""
    if total_frames <= 0 or width < 100:
        raise ValueError("a timeline picture needs at least one frame and 100 pixels")
    margin, bar_top, bar_height = 10, 10, 40
    height = bar_top + bar_height + 30
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = _BACKGROUND
    inner = width - 2 * margin

    def x_of(frame: int | Fraction) -> int:
        return margin + int(Fraction(frame) * inner / total_frames)

    pixels[bar_top:bar_top + bar_height, margin:margin + inner] = _BAR
    for start, end in spans:
        left, right = x_of(start), max(x_of(min(end, total_frames)), x_of(start) + 1)
        pixels[bar_top:bar_top + bar_height, left:right] = _HIDDEN
    seconds = Fraction(total_frames) / frame_rate
    step = 10 if seconds <= 1800 else 60
    label_every = 60 if seconds > 120 else 10
    for second in range(0, int(seconds) + 1, step):
        x = min(x_of(second * frame_rate), margin + inner - 1)
        labelled = second % label_every == 0
        pixels[bar_top + bar_height:bar_top + bar_height + (8 if labelled else 4), x] = _TICK
        if labelled:
            text = f"{second // 60}:{second % 60:02d}"
            left = min(max(0, x - len(text) * 2 * scale), width - len(text) * 4 * scale)
            for n, char in enumerate(text):
                glyph = _GLYPHS[char]
                for row in range(5):
                    for column in range(3):
                        if glyph[row * 3 + column] == "1":
                            y0 = bar_top + bar_height + 10 + row * scale
                            x0 = left + (n * 4 + column) * scale
                            pixels[y0:y0 + scale, x0:x0 + scale] = _TEXT
    return _png(pixels)


def report_timeline_png(report: dict[str, Any], spans: Iterable[tuple[int, int]] | None = None,
                        width: int = 1200) -> bytes:
    """:func:`timeline_png` of a report (its merged timeline and redacted spans, or ``spans``)."""
    timeline = report["merged_timeline"]
    rate = Fraction(timeline["frame_rate"])
    chosen = spans if spans is not None else [(s["start_frame"], s["end_frame"])
                                              for s in report.get("redaction", {}).get("spans", [])]
    return timeline_png(int(timeline["frames"]), rate, chosen, width=width)
