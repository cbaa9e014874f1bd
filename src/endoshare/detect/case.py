"""Out-of-body detection over a whole case: each clip is scanned on its own, the scores are then
smoothed once on the merged timeline so that margins and gap filling cross clip boundaries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..media.join import ClipPlan, JoinPlan
from ..timeline import SegmentSet, format_rate
from ..types import Progress
from .registry import create_detector
from .run import DetectionResult, DetectOptions, detect_video
from .sampling import DetectProgress, KeyframeSink
from .smooth import smooth_scores


@dataclass(frozen=True)
class CaseDetection:
    detector: str
    frame_count: int
    frame_rate: Fraction
    segments: SegmentSet
    options: DetectOptions
    clips: tuple[DetectionResult, ...]

    def to_json(self) -> dict[str, Any]:
        """For the private archive: the spans to review and re-use, per-clip scores included."""
        return {"detector": self.detector, "frame_count": self.frame_count,
                "frame_rate": format_rate(self.frame_rate), "segments": self.segments.to_json(),
                "options": self.options.to_json(),
                "clips": [c.to_json(scores=True) for c in self.clips]}


def timeline_span(clip: ClipPlan, start: int, end: int) -> tuple[int, int]:
    """Timeline frames that show source frames ``start <= k < end`` of ``clip`` (absolute indices)."""
    def first_showing(k: int) -> int:
        exact = Fraction(k) * clip.target_rate / clip.source_rate
        return min(clip.timeline_frames, -((-exact.numerator) // exact.denominator))
    return clip.timeline_start + first_showing(start), clip.timeline_start + first_showing(end)


def detect_case(plan: JoinPlan, detector_name: str, weights: Path | None = None,
                options: DetectOptions | None = None, progress: Progress | None = None,
                cancel: Callable[[], bool] | None = None,
                keyframes: Callable[[ClipPlan], KeyframeSink] | None = None) -> CaseDetection:
    """Detect each clip of ``plan``; ``keyframes(clip)``, when given, gets that clip's decoded keyframes
    (see :func:`~endoshare.detect.run.detect_video`)."""
    detector = create_detector(detector_name, weights)
    options = options or DetectOptions()
    total = plan.total_frames
    results = []
    frames: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    per_clip = SegmentSet()
    for clip in plan.clips:
        def relay(event: DetectProgress, clip: ClipPlan = clip) -> None:
            if progress is not None and event.total:
                share = min(1.0, event.done / event.total)
                progress(clip.timeline_start + int(share * clip.timeline_frames), total)

        result = detect_video(clip.info.path, detector, options, relay, cancel,
                              None if keyframes is None else keyframes(clip))
        results.append(result)
        # A source frame dropped by frame-rate conversion maps onto its nearest shown neighbour.
        mapped = np.array([min(timeline_span(clip, int(k), int(k) + 1)[0],
                               clip.timeline_start + clip.timeline_frames - 1) for k in result.sample_frames],
                          dtype=np.int64)
        frames.append(mapped)
        scores.append(result.sample_scores)
        per_clip = per_clip.union(SegmentSet.of(
            span for s in result.segments
            if (span := timeline_span(clip, s.start_frame, s.end_frame))[1] > span[0]))
    merged = smooth_scores(np.concatenate(frames) if frames else np.zeros(0, np.int64),
                           np.concatenate(scores) if scores else np.zeros(0, np.float32),
                           total, plan.target.frame_rate, results[0].options.smoothing, detector.threshold)
    # The union keeps every span either view found: smoothing per clip never loses to smoothing per case.
    segments = merged.union(per_clip).clipped(total)
    if progress is not None:
        progress(total, total)
    return CaseDetection(detector.name, total, plan.target.frame_rate, segments, results[0].options,
                         tuple(results))



