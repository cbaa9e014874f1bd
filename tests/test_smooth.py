"""Scores → out-of-body spans: hysteresis, unsampled frames, gap filling, short spans, margins, clipping."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from endoshare.detect.smooth import SmoothingOptions, oob_sample_mask, smooth_scores
from endoshare.timeline import Segment, SegmentSet

RATE = Fraction(25)
NO_EXTRAS = SmoothingOptions(enter_threshold=0.5, exit_threshold=0.5, margin_seconds=Fraction(0),
                             fill_gap_seconds=Fraction(0))


def spans(result: SegmentSet) -> list[tuple[int, int]]:
    return [(s.start_frame, s.end_frame) for s in result]


def every_frame(scores: list[float], options: SmoothingOptions = NO_EXTRAS, rate: Fraction = RATE) -> SegmentSet:
    return smooth_scores(np.arange(len(scores)), scores, len(scores), rate, options)


def test_plain_threshold_gives_exact_spans() -> None:
    scores = [0.0] * 10 + [0.9] * 5 + [0.0] * 10
    assert spans(every_frame(scores)) == [(10, 15)]


def test_single_flagged_frame_is_kept_as_a_span() -> None:
    scores = [0.0] * 50
    scores[20] = 0.99
    assert spans(every_frame(scores)) == [(20, 21)]
    widened = every_frame(scores, SmoothingOptions(enter_threshold=0.5, exit_threshold=0.5,
                                                   margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0),
                                                   min_span_seconds=Fraction(1, 5)))
    assert spans(widened) == [(18, 23)]  # 0.2 s at 25 fps = 5 frames, centred on the flash


def test_hysteresis_extends_through_scores_between_thresholds_on_both_sides() -> None:
    options = SmoothingOptions(enter_threshold=0.6, exit_threshold=0.3, margin_seconds=Fraction(0),
                               fill_gap_seconds=Fraction(0))
    scores = [0.1] * 5 + [0.4, 0.45] + [0.9] * 3 + [0.5, 0.35] + [0.1] * 5 + [0.5] * 4 + [0.1] * 3
    # The ramp 0.4, 0.45 before the entry and 0.5, 0.35 after it belong to the span; the later run of
    # 0.5 never reaches the entry threshold, so it is not out of body.
    assert spans(every_frame(scores, options)) == [(5, 12)]
    assert oob_sample_mask([0.4, 0.9, 0.4, 0.2, 0.4], 0.6, 0.3).tolist() == [True, True, True, False, False]


def test_hysteresis_is_opt_in_and_thresholds_default_to_the_detector() -> None:
    resolved = SmoothingOptions().resolved(0.06)
    assert resolved.enter_threshold == resolved.exit_threshold == pytest.approx(0.06)
    assert SmoothingOptions(exit_threshold=0.03).resolved(0.06).exit_threshold == 0.03
    assert SmoothingOptions(enter_threshold=0.8).resolved(0.06).enter_threshold == 0.8


def test_short_inbody_gap_inside_an_oob_stretch_is_filled_but_a_long_one_is_not() -> None:
    options = SmoothingOptions(enter_threshold=0.5, exit_threshold=0.5, margin_seconds=Fraction(0),
                               fill_gap_seconds=Fraction(1, 5))  # 5 frames
    short_gap = [0.0] * 5 + [0.9] * 5 + [0.0] * 5 + [0.9] * 5 + [0.0] * 5
    assert spans(every_frame(short_gap, options)) == [(5, 20)]
    long_gap = [0.0] * 5 + [0.9] * 5 + [0.0] * 6 + [0.9] * 5 + [0.0] * 5
    assert spans(every_frame(long_gap, options)) == [(5, 10), (16, 21)]


def test_margin_is_converted_with_the_exact_rate_and_rounded_up() -> None:
    scores = [0.0] * 100 + [0.9] * 10 + [0.0] * 100
    options = SmoothingOptions(enter_threshold=0.5, exit_threshold=0.5, margin_seconds=Fraction(1, 2),
                               fill_gap_seconds=Fraction(0))
    assert spans(every_frame(scores, options)) == [(100 - 13, 110 + 13)]  # 12.5 frames → 13
    ntsc = every_frame(scores, options, Fraction(30000, 1001))
    assert spans(ntsc) == [(100 - 15, 110 + 15)]  # 0.5 s * 29.97 = 14.985 → 15


def test_spans_are_clipped_to_the_video() -> None:
    scores = [0.9] * 3 + [0.0] * 40 + [0.9] * 2
    options = SmoothingOptions(enter_threshold=0.5, exit_threshold=0.5, margin_seconds=Fraction(1, 2),
                               fill_gap_seconds=Fraction(0))
    assert spans(every_frame(scores, options)) == [(0, 16), (30, 45)]


def test_margin_covers_uncertain_frames_and_stops_at_a_clearly_inbody_one() -> None:
    options = SmoothingOptions(enter_threshold=0.5, exit_threshold=0.3, margin_seconds=Fraction(1, 5),
                               fill_gap_seconds=Fraction(0), margin_floor=0.1)  # 5 frames
    # An abrupt edge: the frames around the excursion are clearly in body, so no frame of them is taken.
    abrupt = [0.01] * 20 + [0.9] * 10 + [0.01] * 20
    assert spans(every_frame(abrupt, options)) == [(20, 30)]
    # A gradual one: 0.2 and 0.15 (between the floor and the exit threshold) are covered, the margin stops
    # at 0.05 before it; after the span the uncertain frames reach beyond the margin, which caps it.
    gradual = [0.01] * 14 + [0.05, 0.2, 0.15] + [0.9] * 10 + [0.2] * 10 + [0.01] * 10
    assert spans(every_frame(gradual, options)) == [(15, 32)]
    # A margin of samples apart: unsampled frames are covered up to the first clearly in-body sample.
    sparse = smooth_scores([0, 10, 20, 30, 40], [0.0, 0.0, 0.9, 0.0, 0.0], 50, RATE, options)
    assert spans(sparse) == [(11, 30)]
    # The default floor, 0, is the unconditional margin; a floor above the exit threshold acts as that.
    unconditional = replace(options, margin_floor=0.0)
    assert SmoothingOptions().margin_floor == 0.0
    assert spans(every_frame(abrupt, unconditional)) == [(15, 35)]
    assert replace(options, margin_floor=0.9).resolved(0.5).margin_floor == pytest.approx(0.3)
    with pytest.raises(ValueError, match="margin_floor"):
        SmoothingOptions(margin_floor=1.5)
    with pytest.raises(ValueError, match="margin_floor"):
        SmoothingOptions(margin_floor=None)  # type: ignore[arg-type]
    assert SmoothingOptions.from_json(options.resolved(0.5).to_json()).margin_floor == pytest.approx(0.1)


def test_unsampled_frames_next_to_an_oob_sample_are_redacted() -> None:
    # Samples every 10 frames; the one at 50 is out of body.  Frames 41..59 were not looked at and
    # sit next to it, so they are redacted; frames between two in-body samples are not.
    frames = list(range(0, 100, 10))
    scores = [0.9 if f == 50 else 0.0 for f in frames]
    result = smooth_scores(frames, scores, 100, RATE, NO_EXTRAS)
    assert spans(result) == [(41, 60)]
    # Before the first and after the last sample nothing was seen: an OoB edge sample reaches the end.
    tail = smooth_scores([0, 10, 20], [0.0, 0.0, 0.9], 40, RATE, NO_EXTRAS)
    assert spans(tail) == [(11, 40)]


def test_no_samples_redacts_everything_and_nan_counts_as_oob() -> None:
    assert spans(smooth_scores([], [], 30, RATE, NO_EXTRAS)) == [(0, 30)]
    assert spans(every_frame([0.0, float("nan"), 0.0])) == [(1, 2)]
    assert spans(smooth_scores([], [], 0, RATE, NO_EXTRAS)) == []


def test_duplicate_samples_keep_the_highest_score_and_order_does_not_matter() -> None:
    result = smooth_scores([5, 3, 3, 4, 0, 2, 1], [0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0], 6, RATE, NO_EXTRAS)
    assert spans(result) == [(3, 4)]


def test_invalid_inputs_are_rejected_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="frame indices"):
        smooth_scores([0, 10], [0.1, 0.2], 10, RATE, NO_EXTRAS)
    with pytest.raises(ValueError, match="scores"):
        smooth_scores([0, 1], [0.1], 10, RATE, NO_EXTRAS)
    with pytest.raises(ValueError, match="exit_threshold"):
        SmoothingOptions(enter_threshold=0.3, exit_threshold=0.6)
    with pytest.raises(ValueError, match="margin_seconds"):
        SmoothingOptions(margin_seconds=Fraction(-1))


def test_options_round_trip_through_json() -> None:
    options = SmoothingOptions(enter_threshold=0.4, exit_threshold=0.2, margin_seconds=Fraction(1, 3),
                               fill_gap_seconds=Fraction(2), min_span_seconds=Fraction(1, 10))
    text = json.dumps(options.to_json())
    assert json.loads(text)["margin_seconds"] == "1/3"
    assert SmoothingOptions.from_json(text) == options
    assert SmoothingOptions.from_json({"margin_seconds": 0.5}).margin_seconds == Fraction(1, 2)
    with pytest.raises(ValueError, match="unknown"):
        SmoothingOptions.from_json({"margin": 1})


def test_result_is_a_segment_set_of_exact_frames() -> None:
    result = every_frame([0.0, 0.9, 0.9, 0.0])
    assert isinstance(result, SegmentSet)
    assert result.segments == (Segment(1, 3),)


def test_a_detector_may_recommend_its_exit_threshold() -> None:
    # Used when the entry threshold is the detector's own; explicit user thresholds always win.
    assert SmoothingOptions().resolved(0.3, 0.075).exit_threshold == 0.075
    assert SmoothingOptions(exit_threshold=0.2).resolved(0.3, 0.075).exit_threshold == 0.2
    assert SmoothingOptions(enter_threshold=0.5).resolved(0.3, 0.075).exit_threshold == 0.5


def test_every_entry_point_takes_the_one_default_margin() -> None:
    # One definition (smooth.DEFAULT_MARGIN_SECONDS): the command line, the pipeline and the GUI import it,
    # so a default chosen by video-level cross-validation cannot drift apart between them.
    import dataclasses

    from endoshare.cli import build_parser
    from endoshare.detect.smooth import DEFAULT_MARGIN_SECONDS
    from endoshare.pipeline import ProcessOptions

    parser = build_parser()
    assert parser.parse_args(["detect", "v.mp4"]).margin == DEFAULT_MARGIN_SECONDS
    assert parser.parse_args(["process", "case", "--archive", "a", "--out", "o"]).margin == DEFAULT_MARGIN_SECONDS
    assert parser.parse_args(["queue", "add", "case", "--archive", "a", "--out", "o"]).margin == DEFAULT_MARGIN_SECONDS
    assert {f.name: f.default for f in dataclasses.fields(ProcessOptions)}["margin_seconds"] == DEFAULT_MARGIN_SECONDS
    assert SmoothingOptions().margin_seconds == DEFAULT_MARGIN_SECONDS
    # The margin the video-level cross-validation chose (docs/builtin-detector.md, "Operating point").
    assert DEFAULT_MARGIN_SECONDS == Fraction(4, 25)
