"""Burned-in text regions of a case and the frames they apply to (JSON-serialisable, like segments).

A region is a pixel rectangle of the merged timeline's picture (the source picture when clips share
a format, which is when fast mode can copy) and the span of timeline frames it is masked in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import OverlaysFileError
from ..storage import read_json_file
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


# --- editing (the review screen): pure operations, each returns a new set ---------------------------------

def region_problem(region: OverlayRegion, width: int, height: int, total_frames: int) -> str | None:
    """Why ``region`` does not fit a ``width`` x ``height`` picture of ``total_frames`` frames, or None."""
    box = region.box
    if box.x1 > width or box.y1 > height:
        return (f"region ({box.x0}, {box.y0})-({box.x1}, {box.y1}) reaches outside the {width}x{height} picture")
    if region.end_frame > total_frames:
        return f"region ends at frame {region.end_frame} but the case has {total_frames} frames"
    return None


def _checked(region: OverlayRegion, width: int, height: int, total_frames: int) -> OverlayRegion:
    problem = region_problem(region, width, height, total_frames)
    if problem is not None:
        raise ValueError(problem)
    return region


def add_region(overlays: OverlaySet, region: OverlayRegion, width: int, height: int,
               total_frames: int) -> OverlaySet:
    """``overlays`` with ``region`` added; ValueError when it does not fit the picture or the case."""
    return OverlaySet.of((*overlays.regions, _checked(region, width, height, total_frames)), overlays.samples)


def remove_region(overlays: OverlaySet, region: OverlayRegion) -> OverlaySet:
    """``overlays`` without ``region`` (one copy of it); ValueError when it is not in the set."""
    regions = list(overlays.regions)
    regions.remove(region)
    return OverlaySet.of(regions, overlays.samples)


def replace_region(overlays: OverlaySet, old: OverlayRegion, new: OverlayRegion, width: int, height: int,
                   total_frames: int) -> OverlaySet:
    """``old`` moved, resized or re-timed into ``new``; ValueError when ``new`` does not fit or ``old`` is
    not in the set."""
    return add_region(remove_region(overlays, old), new, width, height, total_frames)


def move_region(region: OverlayRegion, box: Box | None = None, start_frame: int | None = None,
                end_frame: int | None = None) -> OverlayRegion:
    """``region`` with another rectangle and/or frame span; an edited region is the user's ("manual")."""
    return replace(region, box=box or region.box,
                   start_frame=region.start_frame if start_frame is None else start_frame,
                   end_frame=region.end_frame if end_frame is None else end_frame, kind="manual", masked=True)


def set_kind(region: OverlayRegion, kind: str) -> OverlayRegion:
    """``region`` of ``kind``: "transient" regions are left visible, the others masked."""
    return replace(region, kind=kind, masked=kind != "transient")


def shown_regions(overlays: OverlaySet, frame: int) -> tuple[OverlayRegion, ...]:
    """Every region (masked or not) that applies to timeline frame ``frame``."""
    return tuple(r for r in overlays.regions if r.start_frame <= frame < r.end_frame)


def load_overlays_file(path: Path, width: int | None = None, height: int | None = None,
                       total_frames: int | None = None) -> OverlaySet:
    """Read an overlays file (:meth:`OverlaySet.to_json`); with the picture size and length given, every
    region must fit them.  Raises :class:`~endoshare.errors.OverlaysFileError` naming the file."""
    data = read_json_file(path, "Overlays file", error=OverlaysFileError,
                          missing_fix="edit the regions in the review again.",
                          format_fix="edit the regions in the review again.")
    return overlays_from_json(data, path, width, height, total_frames)


def overlays_from_json(data: object, path: Path, width: int | None = None, height: int | None = None,
                       total_frames: int | None = None) -> OverlaySet:
    """:func:`load_overlays_file` on JSON already read from ``path`` (also the ``overlays`` of a review draft)."""
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list):
        raise OverlaysFileError(f"Overlays file {path} has no 'regions' list; write it as "
                                '{"regions": [{"x0": 0, "y0": 0, "x1": 10, "y1": 10, "start_frame": 0, '
                                '"end_frame": 25}]}.', path=path)
    try:
        overlays = OverlaySet.from_json(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise OverlaysFileError(f"Overlays file {path}: a region is malformed ({exc}). Boxes are integer pixels "
                                "x0 < x1, y0 < y1; frames start inclusive, end exclusive, counted from 0.",
                                path=path) from None
    if width is not None and height is not None and total_frames is not None:
        for region in overlays.regions:
            problem = region_problem(region, width, height, total_frames)
            if problem is not None:
                raise OverlaysFileError(f"Overlays file {path}: {problem}; was it made for another case?",
                                        path=path)
    return overlays
