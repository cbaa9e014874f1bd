"""The audit log of an archive folder: append-only JSON lines, one per job event.

It lives in the private archive (it names cases and folders), never in the shared output folder.  Each
line is written with one ``write`` on a file opened with ``O_APPEND`` and then fsync'ed, so lines from
several processes never interleave and a crash can at worst lose the last line, never corrupt an earlier
one.  The file is never rewritten.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..storage import append_private, full_folder_error
from .queue import Job, options_to_record, utc_now

AUDIT_FILE_NAME = "audit.jsonl"


class AuditEvent(StrEnum):
    """The ``event`` of an audit line: what happened to a job."""

    ADDED = "added"
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel-requested"
    #: A job that a dead runner had fully published, found done on recovery.
    RESUMED = "resumed"
    #: Put back to pending (the runner stopped or crashed while the job ran): it will be redone.
    INTERRUPTED = "interrupted"
    RETRY = "retry"
    REVIEWED = "reviewed"
    REPLACED = "replaced"
    REMOVED = "removed"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):          # no passwd entry and no LOGNAME/USER (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


class AuditLog:
    def __init__(self, archive_dir: Path) -> None:
        self.path = Path(archive_dir) / AUDIT_FILE_NAME
        self.user = current_user()
        self.host = socket.gethostname()

    def append(self, event: AuditEvent, **fields: Any) -> None:
        record = {"time_utc": utc_now(), "user": self.user, "host": self.host, "event": event, **fields}
        try:
            data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            # A path whose name is not UTF-8 on disk (kept as surrogates): JSON's escapes keep it exactly.
            data = (json.dumps(record) + "\n").encode("ascii")
        try:
            append_private(self.path, data)   # never half a line
        except OSError as exc:
            raise (full_folder_error(exc, self.path.parent, f"appending to the audit log {self.path.name}")
                   or OutputError(f"Cannot append to the audit log {self.path} ({exc}); the archive folder must "
                                  "stay writable while the queue runs.", path=self.path)) from None

    def job_event(self, event: AuditEvent, job: Job, **fields: Any) -> None:
        """One line describing ``job`` as it is now: settings, state, result, output checksum."""
        self.append(event, job_id=job.id, case_id=job.case_id, folder=str(job.folder), state=job.state,
                    attempt=job.attempts, pseudonym=job.pseudonym,
                    output=str(job.output) if job.output else None, output_sha256=job.output_sha256,
                    error=job.error, error_type=job.error_type, seconds=job.seconds,
                    settings=options_to_record(job.options), **fields)

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
