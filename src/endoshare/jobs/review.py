"""Review of finished jobs: who checked a case's spans, when, with which final spans; publishing held outputs.

A job run with ``held_for_review`` writes its output into a private holding folder of the archive.  A person
reviews it (the desktop app), then :func:`mark_reviewed` moves the video and its report into the shared
folder — the video first, the commit point, so a report never stands there without its video — and records
the review in the queue database (table ``reviews``) and the audit log, in one transaction.  The report gets a
``review`` section: the time and the final spans, and a timeline picture ``<pseudonym>.timeline.png`` (no
identifier: the case's length and the hidden spans) is written beside it (the reviewer's OS user name stays in
the private audit log and queue only).  Every state survives a restart: it lives in the queue database.

Review states of a job (no row: not reviewed yet)::

    reviewed   the spans were checked; a held output was published
    replaced   a re-render with edited spans replaced this job (``replaced_by``)
    removed    the user removed the job from the app's list (the job and its files stay)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from ..errors import OutputError
from ..report import json_bytes, report_timeline_png
from ..storage import shared_file_mode, write_atomically
from ..timeline import SegmentSet
from .audit import AuditEvent, AuditLog, current_user
from .queue import Job, JobQueue, JobState, JobStateError, utc_now


class ReviewState(StrEnum):
    """What a person did with a finished job in the app (stored in the queue's ``reviews`` table)."""

    #: Checked and accepted as rendered (a held output is then published).
    REVIEWED = "reviewed"
    #: Queued again with edited spans; the new job replaces this one.
    REPLACED = "replaced"
    #: Hidden from the app's list (its files and audit lines stay).
    REMOVED = "removed"


REVIEW_STATES = tuple(ReviewState)


@dataclass(frozen=True)
class Review:
    job_id: int
    state: ReviewState
    reviewer: str | None = None
    time_utc: str | None = None
    spans: SegmentSet | None = None
    output: Path | None = None
    replaced_by: int | None = None


def reviews(queue: JobQueue) -> dict[int, Review]:
    out = {}
    for row in queue.review_rows():
        spans = SegmentSet.from_json(json.loads(row["spans"])) if row["spans"] else None
        out[row["job_id"]] = Review(row["job_id"], ReviewState(row["state"]), row["reviewer"], row["time_utc"], spans,
                                    Path(row["output"]) if row["output"] else None, row["replaced_by"])
    return out


def _move(path: Path, target: Path) -> None:
    os.chmod(path, shared_file_mode())
    try:
        os.replace(path, target)
    except OSError:
        shutil.move(str(path), str(target))     # another volume


def publish_held(job: Job, shared_dir: Path, reviewed_utc: str, spans: SegmentSet) -> tuple[Path, Path | None]:
    """Move a held job's video, then its report (with a ``review`` section: the time and the final spans),
    into ``shared_dir``."""
    if job.output is None or not job.output.is_file():
        raise OutputError(f"The output of case {job.case_id} is no longer in the holding folder ({job.output}); "
                          "process the case again.", path=job.output)
    try:
        shared_dir.mkdir(parents=True, exist_ok=True)
        video = shared_dir / job.output.name
        _move(job.output, video)
        report = None
        if job.report is not None and job.report.is_file():
            data = json.loads(job.report.read_text(encoding="utf-8"))
            data["review"] = {"reviewed_utc": reviewed_utc, "spans": spans.to_json()}
            report = shared_dir / job.report.name
            write_atomically(report, json_bytes(data), shared_file_mode())
            job.report.unlink()
            picture = shared_dir / job.report.name.replace(".report.json", ".timeline.png")
            write_atomically(picture, report_timeline_png(data, [(s.start_frame, s.end_frame) for s in spans]),
                             shared_file_mode())
    except (OSError, ValueError) as exc:
        raise OutputError(f"Cannot move the reviewed output into the shared folder {shared_dir} ({exc}); check "
                          "that it is writable and has space.", path=shared_dir) from None
    return video, report


def mark_reviewed(queue: JobQueue, job_id: int, spans: SegmentSet, shared_dir: Path | None) -> Review:
    """Record that the current user reviewed job ``job_id`` with final ``spans``; publish it if it was held.

    ``spans`` must be the spans the output was rendered with (re-render first after an edit).
    """
    job = queue.get(job_id)
    if job.state != JobState.DONE:
        raise JobStateError(f"Case {job.case_id} is {job.state}; only a finished case can be marked reviewed.",
                            path=queue.path)
    existing = reviews(queue).get(job_id)
    if existing is not None:
        raise JobStateError(f"Case {job.case_id} is already {existing.state}.", path=queue.path)
    reviewer, now = current_user(), utc_now()
    output = job.output
    if job.options.held_for_review:
        if shared_dir is None:
            raise OutputError("No shared folder to publish to; choose one in Settings.")
        output, _report = publish_held(job, shared_dir, now, spans)
    audit = AuditLog(queue.archive_dir)
    queue.set_review(job_id, ReviewState.REVIEWED, reviewer=reviewer, time_utc=now, spans=json.dumps(spans.to_json()),
                     output=str(output) if output else None,
                     record=lambda j: audit.job_event(AuditEvent.REVIEWED, j, reviewer=reviewer, reviewed_utc=now,
                                                      spans=spans.to_json(),
                                                      published=str(output) if output else None))
    return reviews(queue)[job_id]


def replace_job(queue: JobQueue, job_id: int, segments_file: Path, overlays_file: Path | None = None) -> Job:
    """Queue the case of ``job_id`` again, redacted with the spans of ``segments_file`` and, when given, masked
    with the overlay regions of ``overlays_file`` instead of those the finder would find (a review's edit;
    without it the old job's overlays file, if any, stays); the old job is marked ``replaced`` by the new one."""
    old = queue.get(job_id)
    options = replace(old.options, segments_file=segments_file,
                      overlays_file=overlays_file if overlays_file is not None else old.options.overlays_file)
    audit = AuditLog(queue.archive_dir)
    new = queue.add(old.folder, options, old.case_id, record=lambda j: audit.job_event(AuditEvent.ADDED, j,
                                                                                        replaces=job_id))
    queue.set_review(job_id, ReviewState.REPLACED, replaced_by=new.id,
                     record=lambda j: audit.job_event(AuditEvent.REPLACED, j, replaced_by=new.id))
    return new


def hide_job(queue: JobQueue, job_id: int) -> None:
    """Remove a job from the app's list (its files and audit lines stay)."""
    audit = AuditLog(queue.archive_dir)
    queue.set_review(job_id, ReviewState.REMOVED, record=lambda j: audit.job_event(AuditEvent.REMOVED, j))
