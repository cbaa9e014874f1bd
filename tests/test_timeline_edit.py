"""Span edits of the review screen as core operations on SegmentSet, and mm:ss:ff times."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from endoshare.timeline import (
    Segment,
    SegmentSet,
    add_span,
    format_timecode,
    next_span,
    previous_span,
    remove_span,
    replace_span,
    span_at,
)


def test_replace_moves_one_edge_and_keeps_the_others() -> None:
    spans = SegmentSet.of([(10, 20), (300, 320), (500, 510)])
    edited = replace_span(spans, Segment(300, 320), Segment(310, 320))
    assert edited == SegmentSet.of([(10, 20), (310, 320), (500, 510)])
    assert spans == SegmentSet.of([(10, 20), (300, 320), (500, 510)])     # the old value is untouched


def test_replace_that_reaches_a_neighbour_merges() -> None:
    spans = SegmentSet.of([(10, 20), (30, 40)])
    assert replace_span(spans, Segment(10, 20), Segment(10, 30)) == SegmentSet.of([(10, 40)])


def test_replace_or_remove_of_a_span_not_in_the_set_is_refused() -> None:
    spans = SegmentSet.of([(10, 20)])
    with pytest.raises(ValueError, match="not in the set"):
        replace_span(spans, Segment(10, 21), Segment(0, 5))
    with pytest.raises(ValueError, match="not in the set"):
        remove_span(spans, Segment(11, 20))


def test_remove_and_add() -> None:
    spans = SegmentSet.of([(10, 20), (30, 40)])
    assert remove_span(spans, Segment(10, 20)) == SegmentSet.of([(30, 40)])
    assert add_span(spans, Segment(19, 31)) == SegmentSet.of([(10, 40)])
    assert add_span(spans, Segment(50, 60)) == SegmentSet.of([(10, 20), (30, 40), (50, 60)])


def test_navigation() -> None:
    spans = SegmentSet.of([(10, 20), (30, 40)])
    assert span_at(spans, 9) is None and span_at(spans, 10) == Segment(10, 20) and span_at(spans, 20) is None
    assert next_span(spans, 0) == Segment(10, 20)
    assert next_span(spans, 10) == Segment(30, 40)
    assert next_span(spans, 30) is None
    assert previous_span(spans, 35) == Segment(30, 40)
    assert previous_span(spans, 30) == Segment(10, 20)
    assert previous_span(spans, 10) is None


def test_random_edits_match_a_frame_mask() -> None:
    rng = random.Random(12)
    total = 200
    spans = SegmentSet()
    mask = [False] * total
    for _ in range(300):
        action = rng.choice(("add", "remove", "replace"))
        if action == "add" or not spans:
            a = rng.randrange(total - 1)
            b = rng.randrange(a + 1, total + 1)
            spans = add_span(spans, Segment(a, b))
            mask[a:b] = [True] * (b - a)
        else:
            old = rng.choice(spans.segments)
            mask[old.start_frame:old.end_frame] = [False] * old.length
            if action == "remove":
                spans = remove_span(spans, old)
            else:
                a = rng.randrange(total - 1)
                b = rng.randrange(a + 1, total + 1)
                spans = replace_span(spans, old, Segment(a, b))
                mask[a:b] = [True] * (b - a)
        assert spans.mask(total) == mask
        assert all(x.end_frame < y.start_frame for x, y in itertools.pairwise(spans.segments))


@pytest.mark.parametrize(("frame", "rate", "text"), [
    (0, Fraction(25), "00:00:00"),
    (24, Fraction(25), "00:00:24"),
    (25, Fraction(25), "00:01:00"),
    (25 * 61 + 3, Fraction(25), "01:01:03"),
    (25 * 3600, Fraction(25), "1:00:00:00"),
    (30, Fraction(30000, 1001), "00:01:00"),      # second 1 starts at ceil(29.97) = frame 30
    (29, Fraction(30000, 1001), "00:00:29"),
    (60, Fraction(30000, 1001), "00:02:00"),       # ceil(59.94) = 60
    (119, Fraction(120), "00:00:119"),
])
def test_timecode(frame: int, rate: Fraction, text: str) -> None:
    assert format_timecode(frame, rate) == text


def test_timecode_never_goes_back_and_counts_every_frame() -> None:
    rate = Fraction(30000, 1001)
    seen = [format_timecode(f, rate) for f in range(2000)]
    assert len(set(seen)) == len(seen)
    def key(t: str) -> tuple[int, ...]:
        return tuple(int(p) for p in t.split(":"))
    assert [key(t) for t in seen] == sorted(key(t) for t in seen)
