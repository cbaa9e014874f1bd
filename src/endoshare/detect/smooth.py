"""Detector scores → out-of-body spans in exact frame units.

The input is a set of *samples*: frame indices (presentation order, from 0) with one score each.
Not every frame needs a sample; the rules below decide what an unsampled frame becomes, always on
the side of privacy:

1. **Hysteresis** (two-sided, like Canny's edge linking): a sample is out of body when it belongs to a
   run of consecutive samples all scoring ``>= exit_threshold`` that holds at least one sample scoring
   ``>= enter_threshold``.  Doing it in both directions (rather than as a left-to-right state machine)
   also catches the ramp *before* the score crosses ``enter_threshold``, and makes the result
   independent of the reading direction.
2. **Unsampled frames** next to an out-of-body sample are out of body: the span of an out-of-body
   sample reaches to its neighbouring samples (exclusive), whatever they say.  Only frames lying
   between two in-body samples are labelled in-body without having been looked at.
3. **Gap filling**: in-body gaps of at most ``fill_gap_seconds`` between two spans are redacted too
   (a camera that flickers back in for a moment is not worth the risk of showing the room around it).
4. **Short spans are never dropped** (one flagged frame is one face): a span shorter than
   ``min_span_seconds`` is widened around its centre to that length instead.
5. **Safety margin**: ``margin_seconds`` on both sides, converted with the exact frame rate and
   rounded up to whole frames, then everything is clipped to ``[0, frame_count)``.  With a
   ``margin_floor`` above 0 (off by default) a margin stops at the first sample scoring below it: a frame
   the detector clearly calls in body is not redacted for lying next to a span, while frames it hesitated
   on (the scope passing the trocar, motion blur: scores between the floor and the exit threshold) and
   unsampled frames are still covered.  In videos built from development stills a floor of a third of
   the exit threshold kept 2.2 points more of the surgery and lost 0.2 point of out-of-body recall,
   which took it below 99.5 % (docs/builtin-detector.md): why it is not the default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..timeline import Segment, SegmentSet, seconds_to_frames

#: Exit threshold as a share of the entry threshold when it is not given: hysteresis is opt-in.  The
#: detectors' thresholds are already chosen for recall (the built-in one's sits just above the scores
#: of many in-body views), so a lower exit threshold by default would chain whole in-body scenes onto
#: a neighbouring out-of-body span; gap filling and margins absorb flicker instead.
DEFAULT_EXIT_RATIO = 1.0

#: The safety margin added on both sides of every span unless the user gives one: the one definition
#: that the pipeline, the command line and the GUI import.  Chosen on cross-validated video-level
#: behaviour of the development set (docs/builtin-detector.md, "Operating point"): 4 frames at 25 fps
#: (0.2 s kept 0.6 point less of the surgery for 0.04 point more out-of-body recall).
DEFAULT_MARGIN_SECONDS = Fraction(4, 25)


def _fraction_field(name: str, value: Any) -> Fraction:
    try:
        frac = Fraction(value) if not isinstance(value, float) else Fraction(str(value))
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number of seconds such as 0.5 or \"1/2\", got {value!r}") from None
    if frac < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return frac


@dataclass(frozen=True)
class SmoothingOptions:
    """How scores become spans.  ``None`` thresholds mean "derive from the detector's threshold"."""

    enter_threshold: float | None = None
    exit_threshold: float | None = None
    margin_seconds: Fraction = DEFAULT_MARGIN_SECONDS
    fill_gap_seconds: Fraction = Fraction(1)
    min_span_seconds: Fraction = Fraction(0)
    #: Samples scoring below this stop a margin (rule 5); 0: the margin is unconditional.
    margin_floor: float = 0.0

    def __post_init__(self) -> None:
        for name in ("margin_seconds", "fill_gap_seconds", "min_span_seconds"):
            object.__setattr__(self, name, _fraction_field(name, getattr(self, name)))
        for name in ("enter_threshold", "exit_threshold", "margin_floor"):
            value = getattr(self, name)
            if value is None and name != "margin_floor":
                continue  # derived from the detector
            if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
        if (self.enter_threshold is not None and self.exit_threshold is not None
                and self.exit_threshold > self.enter_threshold):
            raise ValueError(f"exit_threshold ({self.exit_threshold}) must not exceed enter_threshold "
                             f"({self.enter_threshold}): hysteresis leaves out of body at a lower score")

    def resolved(self, detector_threshold: float, detector_exit_threshold: float | None = None) -> SmoothingOptions:
        """The same options with concrete thresholds, as recorded in a report.  A detector may recommend its
        own exit threshold (the built-in one's was chosen by video-level cross-validation); it is used when
        the entry threshold is the detector's too."""
        enter = float(self.enter_threshold if self.enter_threshold is not None else detector_threshold)
        exit_ = self.exit_threshold
        if exit_ is None and self.enter_threshold is None and detector_exit_threshold is not None:
            exit_ = detector_exit_threshold
        if exit_ is None:
            exit_ = enter * DEFAULT_EXIT_RATIO
        exit_ = min(float(exit_), enter)
        return replace(self, enter_threshold=enter, exit_threshold=exit_, margin_floor=min(self.margin_floor, exit_))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("margin_seconds", "fill_gap_seconds", "min_span_seconds"):
            frac = getattr(self, name)
            data[name] = f"{frac.numerator}/{frac.denominator}"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> SmoothingOptions:
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ValueError(f"smoothing options must be a JSON object, got {data!r}")
        known = {"enter_threshold", "exit_threshold", "margin_seconds", "fill_gap_seconds", "min_span_seconds",
                 "margin_floor"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown smoothing option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def oob_sample_mask(scores: npt.ArrayLike, enter: float, exit_: float) -> npt.NDArray[np.bool_]:
    """Two-sided hysteresis over a sequence of samples (see the module docstring, rule 1)."""
    values = np.asarray(scores, dtype=np.float64)
    # NaN (a frame the detector could not score) counts as out of body: never show what was not seen.
    values = np.where(np.isnan(values), 1.0, values)
    high = values >= enter
    candidate = values >= exit_
    out = np.zeros(values.shape, dtype=bool)
    if not candidate.any():
        return out
    # Label runs of consecutive candidates; keep the runs that contain a "high" sample.
    edges = np.diff(np.concatenate(([0], candidate.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    high_prefix = np.concatenate(([0], np.cumsum(high)))
    for start, end in zip(starts, ends, strict=True):
        if high_prefix[end] - high_prefix[start] > 0:
            out[start:end] = True
    return out


def smooth_scores(frame_indices: Sequence[int] | npt.ArrayLike, scores: Sequence[float] | npt.ArrayLike,
                  frame_count: int, frame_rate: Fraction, options: SmoothingOptions,
                  detector_threshold: float = 0.5) -> SegmentSet:
    """Out-of-body spans of a video of ``frame_count`` frames from scored samples.

    ``frame_indices`` need not cover every frame, nor be sorted; duplicate indices keep their highest
    score.  A video without any sample is redacted entirely: nothing was checked.
    """
    if frame_count < 0:
        raise ValueError(f"frame_count must be >= 0, got {frame_count}")
    if frame_count == 0:
        return SegmentSet()
    frame_rate = Fraction(frame_rate)
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if indices.shape != values.shape:
        raise ValueError(f"{indices.size} frame indices but {values.size} scores")
    if indices.size and (indices.min() < 0 or indices.max() >= frame_count):
        raise ValueError(f"sample frame indices must lie in [0, {frame_count}), got "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    if indices.size == 0:
        return SegmentSet((Segment(0, frame_count),))

    opts = options.resolved(detector_threshold)
    assert opts.enter_threshold is not None and opts.exit_threshold is not None
    order = np.lexsort((-np.nan_to_num(values, nan=2.0), indices))
    indices, values = indices[order], values[order]
    first = np.concatenate(([True], indices[1:] != indices[:-1]))
    indices, values = indices[first], values[first]

    oob = oob_sample_mask(values, opts.enter_threshold, opts.exit_threshold)
    spans = _spans_of_oob_samples(indices, oob, frame_count)
    spans = _fill_gaps(spans, seconds_to_frames(opts.fill_gap_seconds, frame_rate))
    spans = _widen_short(spans, seconds_to_frames(opts.min_span_seconds, frame_rate))
    margins = _Margins(indices, np.where(np.isnan(values), 1.0, values), opts.margin_floor,
                       seconds_to_frames(opts.margin_seconds, frame_rate), frame_count)
    widened = [(margins.start(max(0, start)), margins.end(min(frame_count, end))) for start, end in spans]
    return SegmentSet.of(Segment(start, end) for start, end in widened if end > start)


@dataclass(frozen=True)
class _Margins:
    """Rule 5: a span's edge moves out by at most ``frames``, and not over a sample scoring below ``floor``."""

    indices: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    floor: float
    frames: int
    frame_count: int

    def end(self, end: int) -> int:
        limit = min(self.frame_count, end + self.frames)
        pos = int(np.searchsorted(self.indices, end, side="left"))     # the first sample at or after the end
        while pos < self.indices.size and self.indices[pos] < limit:
            if self.values[pos] < self.floor:
                return int(self.indices[pos])
            pos += 1
        return limit

    def start(self, start: int) -> int:
        limit = max(0, start - self.frames)
        pos = int(np.searchsorted(self.indices, start, side="left")) - 1  # the last sample before the start
        while pos >= 0 and self.indices[pos] >= limit:
            if self.values[pos] < self.floor:
                return int(self.indices[pos]) + 1
            pos -= 1
        return limit


def _spans_of_oob_samples(indices: npt.NDArray[np.int64], oob: npt.NDArray[np.bool_],
                          frame_count: int) -> list[tuple[int, int]]:
    """Each out-of-body sample claims every frame up to (not including) its neighbouring samples."""
    spans: list[tuple[int, int]] = []
    for pos in np.flatnonzero(oob):
        start = int(indices[pos - 1]) + 1 if pos > 0 else 0
        end = int(indices[pos + 1]) if pos + 1 < indices.size else frame_count
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _fill_gaps(spans: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _widen_short(spans: list[tuple[int, int]], min_length: int) -> list[tuple[int, int]]:
    out = []
    for start, end in spans:
        missing = min_length - (end - start)
        if missing > 0:
            start -= missing // 2
            end += missing - missing // 2
        out.append((start, end))
    return out
