"""process detects out-of-body scenes by default and blacks every one of them out."""

from __future__ import annotations

import json
from pathlib import Path

from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.sample import make_sample_case
from endoshare.timeline import SegmentSet
from media import decoded_frames, luma_max


def test_default_detection_redacts_every_planted_oob_frame(tmp_path: Path) -> None:
    sample = make_sample_case(tmp_path / "in", width=320, height=180)
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive")
    assert options.detector == "builtin"
    result = process_case(CaseRequest(sample.folder), options)
    frames = decoded_frames(result.output)
    assert len(frames) == len(sample.labels)
    oob = [i for i, label in enumerate(sample.labels) if label == "oob"]
    assert all(luma_max(frames[i]) <= 20 for i in oob)
    inbody_kept = sum(1 for i, label in enumerate(sample.labels) if label == "inbody" and luma_max(frames[i]) > 20)
    assert inbody_kept >= 0.75 * sample.labels.count("inbody")
    # The detection is archived for review and re-use: the same spans as the report's, covering the truth.
    archived = json.loads((tmp_path / "archive" / "detections" / f"{result.pseudonym}.json").read_text())
    report = json.loads(result.report.read_text())
    assert archived["segments"] == report["redaction"]["spans"]
    spans = SegmentSet.from_json(archived["segments"])
    assert all(spans.contains(i) for i in oob)
    # Re-render from the archived spans without detecting again.
    segments_file = tmp_path / "reviewed.json"
    segments_file.write_text(json.dumps(archived))
    again = process_case(CaseRequest(sample.folder),
                         ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive",
                                        segments_file=segments_file))
    assert json.loads(again.report.read_text())["redaction"]["spans"] == archived["segments"]


def test_safety_margin_widens_every_detected_span(tmp_path: Path) -> None:
    from fractions import Fraction

    from endoshare.pipeline import RenderedCase, render_case

    sample = make_sample_case(tmp_path / "in", width=160, height=96)
    spans = {}
    for margin in (Fraction(0), Fraction(1)):
        options = ProcessOptions(out_dir=tmp_path / f"shared-{margin}", archive_dir=tmp_path / "archive",
                                 margin_seconds=margin)
        rendered: RenderedCase = render_case(CaseRequest(sample.folder), options, f"p-{margin}")
        rendered.temp.unlink()
        spans[margin] = SegmentSet.from_json(rendered.report["redaction"]["spans"])
        assert rendered.report["settings"]["margin_seconds"] == f"{margin.numerator}/{margin.denominator}"
    total = len(sample.labels)
    for span in spans[Fraction(0)]:
        # One second at 25 fps is 25 frames on each side, clipped to the case.
        assert all(spans[Fraction(1)].contains(i) for i in range(max(0, span.start_frame - 25),
                                                                  min(total, span.end_frame + 25)))
    assert spans[Fraction(1)].frame_count > spans[Fraction(0)].frame_count
