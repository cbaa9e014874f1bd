"""Detect out-of-body spans over one video: sample, score, smooth.

Two strategies:

* **coarse-to-fine** (stateless detectors): demux every packet (cheap), decode and score the
  keyframes only, decide from keyframe scores and compressed-domain cues (packet-size spikes and level
  shifts) which GOPs may hold a boundary or an excursion, then decode those GOPs in full and score
  every frame, so that span boundaries are frame-exact.  GOPs between two in-body keyframes with no
  cue are never decoded beyond their keyframe; GOPs between two out-of-body keyframes are redacted
  whole without being decoded.
* **sequential** (stateful detectors, or on request): decode every frame in order and score one out of
  ``sequential_step`` frames (default every frame), as an LSTM needs a regular sequence.

Memory stays bounded: frames are streamed and scored in batches; only per-frame packet sizes and
timestamps (a few bytes per frame) and the scores are kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import InputError, MissingInputError
from ..storage import read_json_file
from ..timeline import SegmentSet, format_rate
from .base import EXIT_THRESHOLD_ATTRIBUTE, Detector
from .cues import CueSettings, scene_change_frames, suspicious_gops
from .sampling import (
    CancelCallback,
    CoarseScan,
    KeyframeSink,
    ProgressCallback,
    PtsUnusableError,
    ReadSettings,
    coarse_scan,
    score_ranges,
    score_sequential,
)
from .smooth import SmoothingOptions, smooth_scores

Strategy = Literal["auto", "coarse-to-fine", "sequential"]
STRATEGIES: tuple[str, ...] = ("auto", "coarse-to-fine", "sequential")


@dataclass(frozen=True)
class DetectOptions:
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    #: "auto": coarse-to-fine for a stateless detector, sequential for a stateful one.
    strategy: Strategy = "auto"
    #: Sequential strategy: score one frame out of this many (1 = every frame, as OOBNet was trained).
    sequential_step: int = 1
    #: Coarse-to-fine: keyframes scoring at or above this (but below the entry threshold) are uncertain
    #: and their GOPs are decoded in full.  None: the resolved exit threshold.
    suspect_threshold: float | None = None
    cues: CueSettings = field(default_factory=CueSettings)
    #: Coarse-to-fine: what the first pass decodes ("keyframes" or "reference"; see sampling.COARSE_FRAMES).
    coarse_frames: str = "keyframes"
    read: ReadSettings = field(default_factory=ReadSettings)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        step: object = self.sequential_step      # as given, perhaps from JSON
        if not isinstance(step, int) or step < 1:
            raise ValueError(f"sequential_step must be a whole number of frames >= 1, got {self.sequential_step!r}")
        if self.read.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.read.batch_size}")

    def to_json(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing.to_json(), "strategy": self.strategy,
                "sequential_step": self.sequential_step, "suspect_threshold": self.suspect_threshold,
                "coarse_frames": self.coarse_frames,
                "cues": asdict(self.cues), "read": asdict(self.read)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> DetectOptions:
        fields: dict[str, Any] = dict(json.loads(data) if isinstance(data, str) else data)
        return cls(smoothing=SmoothingOptions.from_json(fields.pop("smoothing", {})),
                   cues=CueSettings(**fields.pop("cues", {})), read=ReadSettings(**fields.pop("read", {})),
                   **fields)


@dataclass(frozen=True)
class DetectionStats:
    """What the run cost: decoded frames versus frames in the video, and wall-clock seconds per phase."""

    strategy: str
    packets: int
    keyframes: int
    frames_decoded: int
    frames_scored: int
    gops_total: int = 0
    gops_refined: int = 0
    scene_changes: int = 0
    seconds_index: float = 0.0
    seconds_refine: float = 0.0
    seconds_sequential: float = 0.0
    seconds_total: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectionResult:
    input: Path
    frame_count: int
    frame_rate: Fraction
    detector: str
    #: Scored samples (presentation frame indices, ascending) and their scores.
    sample_frames: npt.NDArray[np.int64] = field(repr=False)
    sample_scores: npt.NDArray[np.float32] = field(repr=False)
    segments: SegmentSet
    #: The options actually used, thresholds resolved.
    options: DetectOptions
    stats: DetectionStats

    @property
    def oob_frames(self) -> int:
        return self.segments.frame_count

    def to_json(self, *, scores: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": str(self.input),
            "frame_count": self.frame_count,
            "frame_rate": format_rate(self.frame_rate),
            "detector": self.detector,
            "segments": self.segments.to_json(),
            "options": self.options.to_json(),
            "stats": self.stats.to_json(),
        }
        if scores:
            data["scores"] = {"frames": [int(i) for i in self.sample_frames],
                              "scores": [round(float(s), 6) for s in self.sample_scores]}
        return data


def detect_video(path: str | Path, detector: Detector, options: DetectOptions | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
                 keyframes: KeyframeSink | None = None) -> DetectionResult:
    """Out-of-body spans of the video at ``path``, frame-exact, with the smoothing margins applied.

    ``keyframes`` gets the keyframes a coarse pass of keyframes decodes (see :func:`coarse_scan`); it is
    told ``scanned`` only when that pass ran to the end.

    Raises the typed errors of :mod:`endoshare.errors`: ``MissingInputError``, ``EmptyFileError``,
    ``UnreadableMediaError``, ``NoVideoStreamError``, ``InputPermissionError``, ``CancelledError``.
    """
    path = Path(path)
    options = options or DetectOptions()
    smoothing = options.smoothing.resolved(detector.threshold, getattr(detector, EXIT_THRESHOLD_ATTRIBUTE, None))
    assert smoothing.enter_threshold is not None and smoothing.exit_threshold is not None
    suspect = (options.suspect_threshold if options.suspect_threshold is not None
               else smoothing.exit_threshold)
    options = replace(options, smoothing=smoothing, suspect_threshold=min(suspect, smoothing.exit_threshold))
    strategy = options.strategy
    if strategy == "coarse-to-fine" and detector.stateful:
        raise ValueError(f"detector {detector.name!r} keeps state between frames, so it must see a regular "
                         "sequence: use the sequential (or auto) strategy")
    if strategy == "auto":
        strategy = "sequential" if detector.stateful else "coarse-to-fine"

    started = time.perf_counter()
    detector.reset()
    if strategy == "coarse-to-fine":
        try:
            return _coarse_to_fine(path, detector, options, progress, cancel, started, keyframes)
        except PtsUnusableError:
            # Without unique timestamps decoded frames cannot be matched to packets: count by decoding.
            detector.reset()
            strategy = "sequential"
            options = replace(options, sequential_step=1)

    scan = score_sequential(path, detector, options.read, options.sequential_step, progress, cancel)
    elapsed = time.perf_counter() - started
    stats = DetectionStats(strategy="sequential", packets=scan.frame_count, keyframes=0,
                           frames_decoded=scan.frames_decoded, frames_scored=int(scan.frames.size),
                           seconds_sequential=elapsed, seconds_total=elapsed)
    segments = smooth_scores(scan.frames, scan.scores, scan.frame_count, scan.frame_rate, smoothing,
                             detector.threshold)
    return DetectionResult(input=path, frame_count=scan.frame_count, frame_rate=scan.frame_rate,
                           detector=detector.name, sample_frames=scan.frames, sample_scores=scan.scores,
                           segments=segments, options=replace(options, strategy="sequential"), stats=stats)


def _coarse_to_fine(path: Path, detector: Detector, options: DetectOptions, progress: ProgressCallback | None,
                    cancel: CancelCallback | None, started: float, keyframes: KeyframeSink | None) -> DetectionResult:
    smoothing = options.smoothing
    assert smoothing.enter_threshold is not None and options.suspect_threshold is not None
    coarse: CoarseScan = coarse_scan(path, detector, options.read, progress, cancel, options.coarse_frames,
                                     keyframes)
    index_done = time.perf_counter()
    plan = suspicious_gops(coarse.index, coarse.key_frames, coarse.key_scores, smoothing.enter_threshold,
                           options.suspect_threshold, options.cues)
    fine = score_ranges(path, coarse.index, plan, detector, options.read, smoothing.enter_threshold,
                        options.suspect_threshold, progress, cancel,
                        known=dict(zip(coarse.key_frames.tolist(), coarse.key_scores.tolist(), strict=True)),
                        always=frozenset(scene_change_frames(coarse.index, options.cues).tolist()))
    refine_done = time.perf_counter()

    frames = np.concatenate((coarse.key_frames, fine.frames))
    scores = np.concatenate((coarse.key_scores, fine.scores))
    order = np.argsort(frames, kind="stable")
    frames, scores = frames[order], scores[order]
    frame_count = coarse.index.frame_count
    segments = smooth_scores(frames, scores, frame_count, coarse.frame_rate, smoothing, detector.threshold)
    finished = time.perf_counter()
    stats = DetectionStats(
        strategy="coarse-to-fine", packets=frame_count, keyframes=int(coarse.index.keyframe.sum()),
        frames_decoded=coarse.frames_decoded + fine.frames_decoded, frames_scored=int(frames.size),
        gops_total=plan.gops_total, gops_refined=plan.gops_flagged, scene_changes=plan.scene_changes,
        seconds_index=index_done - started, seconds_refine=refine_done - index_done,
        seconds_total=finished - started)
    return DetectionResult(input=path, frame_count=frame_count, frame_rate=coarse.frame_rate,
                           detector=detector.name, sample_frames=frames, sample_scores=scores,
                           segments=segments, options=replace(options, strategy="coarse-to-fine"), stats=stats)


# --------------------------------------------------------------------------------------------------
# Evaluation against per-frame truth

TRUTH_LABELS = ("inbody", "oob", "transition")


def load_truth_labels(path: str | Path) -> tuple[str, ...]:
    """Read ``{"labels": ["inbody" | "oob" | "transition", ...]}``, one label per displayed frame."""
    path = Path(path)
    example = '{"labels": ["inbody", "inbody", "transition", "oob", ...]}'
    data = read_json_file(path, "Truth file", error=InputError, missing_error=MissingInputError,
                          missing_fix="check the path.", format_fix=f"write it as {example}.")
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise InputError(f"Truth file {path} has no 'labels' list; write it as {example}.", path=path)
    bad = sorted({repr(label) for label in labels if label not in TRUTH_LABELS})
    if bad:
        raise InputError(f"Truth file {path} has unknown label(s) {', '.join(bad[:5])}; use only "
                         f"{', '.join(TRUTH_LABELS)} (one per frame).", path=path)
    return tuple(labels)


@dataclass(frozen=True)
class LabelEvaluation:
    """How well redacted spans match per-frame truth ("transition" frames count for neither side)."""

    frame_count: int
    oob_frames: int
    oob_redacted: int
    inbody_frames: int
    inbody_kept: int
    transition_frames: int

    @property
    def oob_recall(self) -> float | None:
        return self.oob_redacted / self.oob_frames if self.oob_frames else None

    @property
    def inbody_kept_fraction(self) -> float | None:
        return self.inbody_kept / self.inbody_frames if self.inbody_frames else None

    @property
    def missed_oob_frames(self) -> int:
        return self.oob_frames - self.oob_redacted

    def to_json(self) -> dict[str, Any]:
        """Shares under the names ``endoshare eval`` (stills) uses, then the frame counts behind them."""
        return {"oob_recall": self.oob_recall, "inbody_kept": self.inbody_kept_fraction,
                "frame_count": self.frame_count, "n_oob": self.oob_frames, "n_inbody": self.inbody_frames,
                "n_transition": self.transition_frames, "oob_redacted_frames": self.oob_redacted,
                "inbody_kept_frames": self.inbody_kept, "missed_oob_frames": self.missed_oob_frames}


def evaluate_segments(segments: SegmentSet, labels: tuple[str, ...] | list[str], frame_count: int,
                      truth_path: str | Path | None = None) -> LabelEvaluation:
    if len(labels) != frame_count:
        raise InputError(f"Truth file {truth_path or ''} has {len(labels)} labels but the video has "
                         f"{frame_count} frames; give exactly one label per displayed frame.",
                         path=truth_path)
    redacted = np.zeros(frame_count, dtype=bool)
    for seg in segments:
        redacted[seg.start_frame:min(seg.end_frame, frame_count)] = True
    truth = np.asarray(labels, dtype=object)
    oob = truth == "oob"
    inbody = truth == "inbody"
    return LabelEvaluation(frame_count=frame_count, oob_frames=int(oob.sum()),
                           oob_redacted=int((oob & redacted).sum()), inbody_frames=int(inbody.sum()),
                           inbody_kept=int((inbody & ~redacted).sum()),
                           transition_frames=int((truth == "transition").sum()))
