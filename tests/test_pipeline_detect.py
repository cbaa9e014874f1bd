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
