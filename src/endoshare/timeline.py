"""Exact time: frame spans on a timeline with an exact (Fraction) frame rate.

All redaction work happens in frame indices of the *merged timeline* (every displayed frame of a
case, in presentation order, numbered from 0).  Seconds only appear when talking to people, and are
derived from an exact ``Fraction`` frame rate so that 30000/1001 never becomes 29.97.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import SegmentsFileError
from .storage import read_json_file


@dataclass(frozen=True, order=True)
class Segment:
    """Frames ``start_frame <= i < end_frame`` (end exclusive)."""

    start_frame: int
    end_frame: int

    def __post_init__(self) -> None:
        bounds: tuple[object, object] = (self.start_frame, self.end_frame)   # as given, perhaps from JSON
        if not all(isinstance(bound, int) for bound in bounds):
            raise TypeError("Segment bounds must be integers (frame indices)")
        if self.start_frame < 0 or self.end_frame <= self.start_frame:
            raise ValueError(
                f"Segment [{self.start_frame}, {self.end_frame}) is empty or negative; "
                "start_frame must be >= 0 and end_frame > start_frame")

    @property
    def length(self) -> int:
        return self.end_frame - self.start_frame

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self.start_frame <= frame < self.end_frame

    def to_json(self) -> dict[str, int]:
        return {"start_frame": self.start_frame, "end_frame": self.end_frame}


@dataclass(frozen=True)
class SegmentSet:
    """Sorted, non-overlapping, non-adjacent spans (adjacent or overlapping spans are merged)."""

    segments: tuple[Segment, ...] = ()

    @classmethod
    def of(cls, spans: Iterable[Segment | tuple[int, int]]) -> SegmentSet:
        items = sorted(s if isinstance(s, Segment) else Segment(int(s[0]), int(s[1])) for s in spans)
        merged: list[Segment] = []
        for seg in items:
            if merged and seg.start_frame <= merged[-1].end_frame:
                last = merged[-1]
                merged[-1] = Segment(last.start_frame, max(last.end_frame, seg.end_frame))
            else:
                merged.append(seg)
        return cls(tuple(merged))

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def __bool__(self) -> bool:
        return bool(self.segments)

    @property
    def frame_count(self) -> int:
        return sum(s.length for s in self.segments)

    def contains(self, frame: int) -> bool:
        return any(frame in s for s in self.segments)

    def mask(self, total_frames: int) -> list[bool]:
        """One bool per frame of a timeline of ``total_frames``: True where redacted."""
        out = [False] * total_frames
        for s in self.segments:
            for i in range(s.start_frame, min(s.end_frame, total_frames)):
                out[i] = True
        return out

    def clipped(self, total_frames: int) -> SegmentSet:
        return SegmentSet.of(Segment(s.start_frame, min(s.end_frame, total_frames))
                             for s in self.segments if s.start_frame < total_frames)

    def union(self, other: SegmentSet) -> SegmentSet:
        return SegmentSet.of((*self.segments, *other.segments))

    def to_json(self) -> list[dict[str, int]]:
        return [s.to_json() for s in self.segments]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> SegmentSet:
        spans = []
        for item in data:
            if not isinstance(item, dict) or "start_frame" not in item or "end_frame" not in item:
                raise ValueError(f"each segment must be an object with start_frame and end_frame, got {item!r}")
            start, end = item["start_frame"], item["end_frame"]
            if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool):
                raise ValueError(f"segment bounds must be integers, got {item!r}")
            spans.append(Segment(start, end))
        return cls.of(spans)


def load_segments_file(path: str | Path) -> SegmentSet:
    """Read ``{"segments": [{"start_frame": a, "end_frame": b}, ...]}`` (or a bare list).

    The output of ``endoshare detect --json`` for one input is accepted as is.
    """
    path = Path(path)
    data = read_json_file(path, "Segments file", error=SegmentsFileError,
                          missing_fix="check the path given to --segments.",
                          format_fix='write it as {"segments": [{"start_frame": 0, "end_frame": 25}]}.')
    if isinstance(data, dict):
        data = data.get("segments")
    if not isinstance(data, list):
        raise SegmentsFileError(f"Segments file {path} has no 'segments' list; write it as "
                                '{"segments": [{"start_frame": 0, "end_frame": 25}]}.', path=path)
    try:
        return SegmentSet.from_json(data)
    except (ValueError, TypeError) as exc:
        raise SegmentsFileError(f"Segments file {path}: {exc}. Frame indices are integers, "
                                "start inclusive, end exclusive, counted from 0.", path=path) from None


def seconds_to_frames(seconds: Fraction | float, frame_rate: Fraction) -> int:
    """Number of whole frames that cover ``seconds`` (rounded up: margins never shrink)."""
    exact = Fraction(seconds) * frame_rate
    return -((-exact.numerator) // exact.denominator)


def format_rate(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def parse_rate(text: str) -> Fraction:
    """``"30000/1001"``, ``"25"`` or ``"29.97"`` → exact Fraction (decimals kept as written)."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a frame rate; write it as 25, 29.97 or 30000/1001") from None
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {text!r}")
    return rate


# --- editing spans (the review screen's operations; each returns a new set, the old one stays valid) ----

def replace_span(spans: SegmentSet, old: Segment, new: Segment) -> SegmentSet:
    """``spans`` with ``old`` given the bounds of ``new``; spans that ``new`` overlaps or touches merge."""
    if old not in spans.segments:
        raise ValueError(f"span [{old.start_frame}, {old.end_frame}) is not in the set; nothing to replace")
    return SegmentSet.of([*(s for s in spans.segments if s != old), new])


def remove_span(spans: SegmentSet, old: Segment) -> SegmentSet:
    """``spans`` without ``old`` (which must be one of its spans)."""
    if old not in spans.segments:
        raise ValueError(f"span [{old.start_frame}, {old.end_frame}) is not in the set; nothing to remove")
    return SegmentSet(tuple(s for s in spans.segments if s != old))


def add_span(spans: SegmentSet, new: Segment) -> SegmentSet:
    """``spans`` with ``new`` added (merged with the spans it overlaps or touches)."""
    return spans.union(SegmentSet((new,)))


def span_at(spans: SegmentSet, frame: int) -> Segment | None:
    """The span that contains ``frame``, if any."""
    return next((s for s in spans.segments if frame in s), None)


def next_span(spans: SegmentSet, frame: int) -> Segment | None:
    """The first span that starts after ``frame``."""
    return next((s for s in spans.segments if s.start_frame > frame), None)


def previous_span(spans: SegmentSet, frame: int) -> Segment | None:
    """The last span that starts before ``frame`` (the one holding ``frame`` counts only if it starts before it)."""
    return next((s for s in reversed(spans.segments) if s.start_frame < frame), None)


def format_timecode(frame: int, rate: Fraction) -> str:
    """``mm:ss:ff`` (``h:mm:ss:ff`` past an hour) of frame ``frame``: whole seconds, then the frame within that
    second counted from 0.  Exact for any rate: frame ``ff`` of second ``s`` is frame ``ceil(s * rate) + ff``."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    seconds = int(Fraction(frame) / rate)       # floor: ceil(seconds * rate) <= frame < ceil((seconds+1) * rate)
    within = frame - seconds_to_frames(seconds, rate)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    width = len(str(max(0, -(-rate.numerator // rate.denominator) - 1)))
    text = f"{minutes:02d}:{secs:02d}:{within:0{max(2, width)}d}"
    return f"{hours}:{text}" if hours else text
