"""Burned-in text regions of a case and the frames they apply to (JSON-serialisable, like segments).

A region is a pixel rectangle of the merged timeline's picture (the source picture when clips share
a format, which is when fast mode can copy) and the span of timeline frames it is masked in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..timeline import Segment, SegmentSet
from .text import Box

#: "overlay": text standing still while the scene moves (a recorder overlay), masked;
#: "transient": a detector box that never stood still or is not text (one blob read as at most one
#: character), reported and left visible; "manual": a region from a saved report or added by hand.
KINDS = ("overlay", "transient", "manual")


@dataclass(frozen=True)
class OverlayRegion:
    """Mask ``box`` in timeline frames ``start_frame <= i < end_frame``."""

    box: Box
    start_frame: int
    end_frame: int
    kind: str = "overlay"
    #: Labels from recognition, for the report only ("name-like", "date", "id", "device-settings"...).
    labels: tuple[str, ...] = ()
    #: Left visible on request (--keep-device-settings): only for regions read as device settings only.
    masked: bool = True
    #: Sampled timeline frames where the detector saw text here.
    seen_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        Segment(self.start_frame, self.end_frame)  # validates the span
        if self.kind not in KINDS:
            raise ValueError(f"region kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def span(self) -> Segment:
        return Segment(self.start_frame, self.end_frame)

    def to_json(self) -> dict[str, Any]:
        return {**self.box.to_json(), "start_frame": self.start_frame, "end_frame": self.end_frame,
                "kind": self.kind, "labels": list(self.labels), "masked": self.masked,
                "seen_at": list(self.seen_at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OverlayRegion:
        return cls(Box.from_json(data), int(data["start_frame"]), int(data["end_frame"]),
                   str(data.get("kind", "manual")), tuple(str(v) for v in data.get("labels", ())),
                   bool(data.get("masked", True)), tuple(int(v) for v in data.get("seen_at", ())))


@dataclass(frozen=True)
class OverlaySet:
    """The regions of a case, sorted by first frame; ``samples`` are the timeline frames that were read."""

    regions: tuple[OverlayRegion, ...] = ()
    samples: tuple[int, ...] = ()

    @classmethod
    def of(cls, regions: Iterable[OverlayRegion], samples: Iterable[int] = ()) -> OverlaySet:
        return cls(tuple(sorted(regions, key=lambda r: (r.start_frame, r.box))), tuple(sorted(set(samples))))

    def __bool__(self) -> bool:
        return any(r.masked for r in self.regions)

    @property
    def masked(self) -> tuple[OverlayRegion, ...]:
        return tuple(r for r in self.regions if r.masked)

    def boxes_at(self, frame: int) -> tuple[Box, ...]:
        """The rectangles to fill in timeline frame ``frame``."""
        return tuple(r.box for r in self.regions if r.masked and r.start_frame <= frame < r.end_frame)

    def frames(self) -> SegmentSet:
        """Timeline frames that carry at least one mask (what fast mode must re-encode)."""
        return SegmentSet.of(r.span for r in self.regions if r.masked)

    def to_json(self) -> dict[str, Any]:
        return {"regions": [r.to_json() for r in self.regions], "samples": list(self.samples)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OverlaySet:
        return cls.of((OverlayRegion.from_json(r) for r in data.get("regions", ())),
                      (int(s) for s in data.get("samples", ())))
