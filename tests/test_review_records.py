"""Review records of the job queue (endoshare.jobs.review): who reviewed what and when, publishing held
outputs, re-renders replacing a job, removal from the app's list; all surviving a reopen of the queue."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from endoshare.errors import OutputError
from endoshare.jobs import JobQueue, JobStateError
from endoshare.jobs.audit import AuditLog, current_user
from endoshare.jobs.review import hide_job, mark_reviewed, replace_job, reviews
from endoshare.jobs.runner import process_one
from endoshare.pipeline import ProcessOptions
from endoshare.timeline import SegmentSet
from media import barcode_clip


@pytest.fixture
def held_job(tmp_path: Path):
    folder = tmp_path / "case-9"
    folder.mkdir()
    barcode_clip(folder / "c1.mp4", range(30), width=160, height=96)
    options = ProcessOptions(out_dir=tmp_path / "archive" / "awaiting-review", archive_dir=tmp_path / "archive",
                             detector="none", held_for_review=True)
    job = process_one(folder, options)
    assert job.state == "done" and job.output.parent == tmp_path / "archive" / "awaiting-review"
    return job


def test_mark_reviewed_publishes_and_records_who_when_and_spans(tmp_path: Path, held_job) -> None:
    shared = tmp_path / "shared"
    spans = SegmentSet.of([(3, 7)])
    with JobQueue(tmp_path / "archive") as queue:
        review = mark_reviewed(queue, held_job.id, spans, shared)
    assert review.state == "reviewed" and review.reviewer == current_user() and review.time_utc
    assert review.output == shared / held_job.output.name and review.output.is_file()
    assert not held_job.output.exists() and not held_job.report.exists()
    report = json.loads((shared / held_job.report.name).read_text())
    assert report["review"] == {"reviewed_utc": review.time_utc, "spans": [{"start_frame": 3, "end_frame": 7}]}
    picture = shared / held_job.report.name.replace(".report.json", ".timeline.png")
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert current_user() not in json.dumps(report["review"])     # the reviewer's name stays private
    assert stat.S_IMODE(os.stat(review.output).st_mode) & 0o044       # shared files get the shared mode
    line = [r for r in AuditLog(tmp_path / "archive").records() if r["event"] == "reviewed"]
    assert len(line) == 1 and line[0]["reviewer"] == current_user() and line[0]["reviewed_utc"] == review.time_utc
    assert line[0]["spans"] == [{"start_frame": 3, "end_frame": 7}] and line[0]["job_id"] == held_job.id
    with JobQueue(tmp_path / "archive") as queue:                    # survives a reopen
        assert reviews(queue)[held_job.id] == review
        with pytest.raises(JobStateError, match="already reviewed"):
            mark_reviewed(queue, held_job.id, spans, shared)


def test_a_held_output_that_vanished_is_not_recorded_as_reviewed(tmp_path: Path, held_job) -> None:
    held_job.output.unlink()
    with JobQueue(tmp_path / "archive") as queue:
        with pytest.raises(OutputError, match="no longer in the holding folder"):
            mark_reviewed(queue, held_job.id, SegmentSet(), tmp_path / "shared")
        assert reviews(queue) == {}
    assert not [r for r in AuditLog(tmp_path / "archive").records() if r["event"] == "reviewed"]


def test_replace_and_hide(tmp_path: Path, held_job) -> None:
    spans_file = tmp_path / "archive" / "edited.json"
    spans_file.write_text(json.dumps({"segments": [{"start_frame": 1, "end_frame": 2}]}))
    with JobQueue(tmp_path / "archive") as queue:
        new = replace_job(queue, held_job.id, spans_file)
        assert new.state == "pending" and new.case_id == held_job.case_id and new.folder == held_job.folder
        assert new.options.segments_file == spans_file and new.options.held_for_review
        assert reviews(queue)[held_job.id].state == "replaced" and reviews(queue)[held_job.id].replaced_by == new.id
        hide_job(queue, new.id)
        assert reviews(queue)[new.id].state == "removed"
    events = [(r["event"], r["job_id"]) for r in AuditLog(tmp_path / "archive").records()]
    assert ("replaced", held_job.id) in events and ("removed", new.id) in events


def test_only_finished_jobs_can_be_reviewed(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none")
    with JobQueue(tmp_path / "archive") as queue:
        job = queue.add(folder, options)
        with pytest.raises(JobStateError, match="only a finished case"):
            mark_reviewed(queue, job.id, SegmentSet(), tmp_path / "shared")


def test_timeline_png_shows_spans_and_holds_nothing_else(tmp_path: Path) -> None:
    from fractions import Fraction

    import av

    from endoshare.report import timeline_png

    data = timeline_png(25 * 180, Fraction(25), [(25 * 60, 25 * 90)], width=600)
    path = tmp_path / "t.png"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert picture.shape[1] == 600
    row = picture[30]                            # through the bar
    red = [x for x in range(600) if tuple(row[x]) == (210, 30, 40)]
    # 60 s..90 s of 180 s on the 580 px between the margins
    assert red and abs(red[0] - (10 + 580 // 3)) <= 1 and abs(red[-1] + 1 - (10 + 580 // 2)) <= 1
    assert tuple(row[5]) == (255, 255, 255) and tuple(row[100]) == (120, 170, 120)
    assert b"tEXt" not in data and b"iTXt" not in data and b"eXIf" not in data   # pixels only
    with pytest.raises(ValueError):
        timeline_png(0, Fraction(25), [])
