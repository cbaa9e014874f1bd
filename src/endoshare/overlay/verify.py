"""After rendering: are the masked regions filled, and does the text detector find nothing there?"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from ..media.frames import luma_plane, picture_array
from ..media.probe import open_input, stream_time_base
from ..render.common import Redaction, RenderResult
from ..timeline import SegmentSet
from ..types import Cancel, check_cancelled
from ..verify import CheckResult
from .mask import FILL_Y
from .regions import OverlaySet
from .text import UNCLIP_RATIO, Box, TextDetector, detector_size

#: Output frames checked per masked region (its first, middle and last frame), and per case at most.
PER_REGION = 3
MAX_FRAMES = 24


class _OutputMap:
    """Output frame index ↔ timeline frame, for the cut and frame-rate conversion the renderers do."""

    def __init__(self, total: int, segments: SegmentSet, redaction: Redaction, rendered: RenderResult,
                 target_rate: Fraction) -> None:
        self.redacted = np.asarray(segments.clipped(total).mask(total), bool) if total else np.zeros(0, bool)
        cut = self.redacted if redaction is Redaction.CUT else np.zeros(total, bool)
        self.kept = np.flatnonzero(~np.asarray(cut, bool)) if total else np.zeros(0, np.int64)
        self.step = Fraction(target_rate) / Fraction(rendered.frame_rate)
        self.frames = rendered.frame_count

    def timeline(self, output: int) -> int:
        return int(self.kept[min(len(self.kept) - 1, int(output * self.step))])

    def output_near(self, timeline: int) -> int | None:
        """An output frame showing ``timeline`` or the nearest kept frame after it, if any."""
        kept_index = int(np.searchsorted(self.kept, timeline))
        if kept_index >= len(self.kept):
            return None
        output = math.ceil(kept_index / self.step)
        return output if output < self.frames else None


def choose_frames(overlays: OverlaySet, outputs: _OutputMap) -> list[int]:
    chosen: set[int] = set()
    for region in overlays.masked:
        for t in (region.start_frame, (region.start_frame + region.end_frame) // 2, region.end_frame - 1):
            output = outputs.output_near(t)
            if output is not None and outputs.timeline(output) < region.end_frame:
                chosen.add(output)
    ordered = sorted(chosen)
    if len(ordered) > MAX_FRAMES:
        ordered = [ordered[int(i)] for i in np.linspace(0, len(ordered) - 1, MAX_FRAMES).round()]
    return sorted(set(ordered))


def _scaled(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    return Box(max(0, math.floor(box.x0 * sx)), max(0, math.floor(box.y0 * sy)),
               min(width, max(math.floor(box.x0 * sx) + 1, math.ceil(box.x1 * sx))),
               min(height, max(math.floor(box.y0 * sy) + 1, math.ceil(box.y1 * sy))))


def _decode_frames(path: Path, wanted: list[int], rate: Fraction, cancel: Cancel | None) -> dict[int, av.VideoFrame]:
    """Output frames by index (seek to the keyframe before each, decode forward); ``CancelledError`` once
    ``cancel`` says so."""
    found: dict[int, av.VideoFrame] = {}
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream_time_base(stream, path)
        first_pts = stream.start_time or 0
        for index in wanted:
            if index in found:
                continue
            check_cancelled(cancel)
            pts = first_pts + int(Fraction(index) / rate / tb)
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                current = round(Fraction(frame.pts - first_pts) * tb * rate)
                if current in wanted and current not in found:
                    found[current] = frame
                if current >= index:
                    break
    return found


#: Share of a detected text box that must lie outside every mask for it to be text left visible.
OUTSIDE_SHARE = 0.2


def _kernel(found: Box) -> Box:
    """The text kernel the detector grew ``found`` from (DB unclip: ``grow = w * h * ratio / (2 (w + h))``
    on each side of a ``w`` x ``h`` kernel): the pixels the detector actually took for text.

    The grow is found by bisection: ``g - grow(W - 2g, H - 2g)`` rises from negative at ``g = 0`` to
    positive where the kernel vanishes, so it has one root (a fixed-point iteration oscillates and gave up
    on wide, flat boxes, leaving their whole grown box to count as text sticking out of a mask).
    """
    def excess(grow: float) -> float:
        w, h = found.width - 2 * grow, found.height - 2 * grow
        return grow - w * h * UNCLIP_RATIO / (2 * (w + h))

    low, high = 0.0, min(found.width, found.height) / 2
    if high <= 0.5 or excess(high - 1e-6) <= 0:
        return found
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(middle) < 0 else (low, middle)
    g = math.floor(low)
    if found.width - 2 * g < 1 or found.height - 2 * g < 1:
        return found
    return Box(found.x0 + g, found.y0 + g, found.x1 - g, found.y1 - g)


def _share_outside(found: Box, masks: list[Box]) -> float:
    """Share of ``found``'s pixels covered by no mask (masks may overlap each other)."""
    covered = np.zeros((found.height, found.width), dtype=bool)
    for m in masks:
        x0, x1 = max(found.x0, m.x0) - found.x0, min(found.x1, m.x1) - found.x0
        y0, y1 = max(found.y0, m.y0) - found.y0, min(found.y1, m.y1) - found.y0
        if x1 > x0 and y1 > y0:
            covered[y0:y1, x0:x1] = True
    return float(1.0 - covered.mean())


def verify_overlays(path: Path, overlays: OverlaySet, rendered: RenderResult, segments: SegmentSet,
                    redaction: Redaction, total: int, target: tuple[int, int, Fraction],
                    detector: TextDetector, cancel: Cancel | None = None) -> tuple[tuple[CheckResult, ...],
                                                                                   tuple[int, ...]]:
    """Checks "overlay-fill" (the masked pixels are solid black) and "overlay-text" (the text detector
    finds no text overlapping a masked region) on sampled output frames; also the frames checked."""
    width, height, rate = target
    outputs = _OutputMap(total, segments, redaction, rendered, rate)
    wanted = choose_frames(overlays, outputs)
    if not wanted:
        detail = "no masked region" if not overlays else "no output frame shows a masked region"
        return (CheckResult("overlay-fill", True, detail), CheckResult("overlay-text", True, detail)), ()
    try:
        frames = _decode_frames(path, wanted, Fraction(rendered.frame_rate), cancel)
    except av.error.FFmpegError as exc:
        failed = f"the output cannot be decoded for the check ({exc})"
        return (CheckResult("overlay-fill", False, failed), CheckResult("overlay-text", False, failed)), tuple(wanted)
    sx, sy = rendered.width / width, rendered.height / height
    det_w, det_h = detector_size(rendered.width, rendered.height)
    fill_problems: list[str] = []
    text_problems: list[str] = []
    missing = [w for w in wanted if w not in frames]
    for output in wanted:
        frame = frames.get(output)
        if frame is None:
            continue
        t = outputs.timeline(output)
        masked = [_scaled(b, sx, sy, rendered.width, rendered.height) for b in overlays.boxes_at(t)]
        kept = [_scaled(r.box, sx, sy, rendered.width, rendered.height) for r in overlays.regions
                if not r.masked and r.start_frame <= t < r.end_frame]
        luma = luma_plane(frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame)
        # A redacted (black or blurred) frame carries no mask: the redaction check covers it.
        filled = True
        for box in masked if not outputs.redacted[t] else ():
            inner = luma[box.y0 + 2:box.y1 - 2, box.x0 + 2:box.x1 - 2].astype(np.int16)
            if inner.size and (np.abs(inner - FILL_Y).mean() > 4 or np.percentile(np.abs(inner - FILL_Y), 99) > 24):
                fill_problems.append(f"frame {output} region {box.to_json()}")
                filled = False
        picture = picture_array(frame, det_w, det_h, format="bgr24", interpolation="AREA")
        for found in detector.boxes(picture, (rendered.width / det_w, rendered.height / det_h)):
            if any(found.intersection(k) >= 0.5 * found.area for k in kept):
                continue
            # A box taller than the region it overlaps is not a line of its text sticking out of the
            # mask: it is the detector taking a stack of black masks for a text block.  In a frame whose
            # masks are verified solid black, a box lying within them is the detector taking the black
            # fill itself for text (nothing is left inside); text sticking out of a mask reaches outside.
            touching = [m for m in masked
                        if found.intersection(m) >= 0.1 * found.area and found.height <= 1.5 * m.height]
            if touching and (not filled or _share_outside(_kernel(found), masked) >= OUTSIDE_SHARE):
                text_problems.append(f"frame {output} text at {found.to_json()}")
    checked = f"{len(frames)} output frames checked"
    fill = CheckResult("overlay-fill", not fill_problems and not missing,
                       checked + ("" if not missing else f"; frames {missing[:5]} could not be decoded")
                       + ("" if not fill_problems else "; not filled: " + ", ".join(fill_problems[:5])))
    text = CheckResult("overlay-text", not text_problems and not missing,
                       checked + ("" if not text_problems else "; text found in a masked region: "
                                  + ", ".join(text_problems[:5])
                                  + " (add or widen the region in review, or process with a wider margin)"))
    return (fill, text), tuple(wanted)
