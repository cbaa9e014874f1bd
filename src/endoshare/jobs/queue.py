"""The job queue of one archive folder: an SQLite database in WAL mode.

Each job is one case with the options it was added with.  States::

    pending ──start──▶ running ──▶ done | failed | cancelled
       ▲                  │
       └── requeue ───────┘   (the runner stopped or crashed while the job ran; it is redone)
    failed | cancelled ──retry──▶ pending

Every change is one short ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL``, so that a power cut
leaves the database as it was after the last committed change; a change that cannot be written (a full
archive disk) raises a :class:`QueueError` or :class:`~endoshare.errors.DiskFullError` naming the archive,
never a bare ``sqlite3`` error.  Several runners may work on one queue at once (``queue run`` beside
multi-case ``process`` runs): a job is claimed by one atomic ``pending → running`` change that records its
runner, and each runner holds an OS file lock of its own while it lives, so a ``running`` job whose
runner's lock is free was interrupted and belongs to nobody.  Only one ``queue run`` (the runner of every
pending job) may work at a time (:meth:`JobQueue.runner_lock`).  The database and its ``-wal``/``-shm``
files are private (0600).  WAL needs a local file system: the archive folder must not be on a network share.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..cases import case_id_for
from ..errors import DiskFullError, EndoshareError
from ..pipeline import Phase, ProcessOptions
from ..storage import full_folder_error, make_private, open_private, private_dir

QUEUE_FILE_NAME = "queue.sqlite3"
RUNNER_LOCK_NAME = "queue.runner.lock"


class JobState(StrEnum):
    """Where a job is in its life (the diagram above); stored as its value in the ``state`` column."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATES = tuple(JobState)
FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
#: States from which ``retry`` puts a job back to pending.
RETRYABLE_STATES = frozenset({JobState.FAILED, JobState.CANCELLED})
BUSY_TIMEOUT_SECONDS = 30

#: Called with the changed job *inside* its transaction (the audit log): if it fails, the change is rolled
#: back, and a crash after it leaves the line logged and the change undone — never a change without a line.
Recorder = Callable[["Job"], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    folder TEXT NOT NULL,
    case_id TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    pseudonym TEXT,
    output TEXT,
    report TEXT,
    output_sha256 TEXT,
    error TEXT,
    error_type TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    phase TEXT,
    fraction REAL NOT NULL DEFAULT 0,
    created_utc TEXT NOT NULL,
    started_utc TEXT,
    finished_utc TEXT,
    seconds REAL,
    runner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS reviews (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    state TEXT NOT NULL CHECK (state IN ('reviewed', 'replaced', 'removed')),
    reviewer TEXT,
    time_utc TEXT,
    spans TEXT,
    output TEXT,
    replaced_by INTEGER
);
"""


class QueueError(EndoshareError, RuntimeError):
    """The queue cannot do what was asked (unknown job, wrong state, another runner active)."""


class JobNotFoundError(QueueError, LookupError):
    pass


class JobStateError(QueueError):
    pass


class QueueBusyError(QueueError):
    pass


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _stored_path(path: Path) -> str | bytes:
    """A path as SQLite keeps it: text, or its bytes on disk when its name is not UTF-8 (SQLite text must be)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _read_path(value: str | bytes) -> Path:
    return Path(os.fsdecode(value))


def options_to_record(options: ProcessOptions) -> dict[str, Any]:
    """Every field of ``options``, paths included: :meth:`ProcessOptions.to_record`."""
    return options.to_record()


def options_from_record(record: dict[str, Any]) -> ProcessOptions:
    """Options stored by :func:`options_to_record`: :meth:`ProcessOptions.from_record` (files not re-checked)."""
    return ProcessOptions.from_record(record)


@dataclass(frozen=True)
class Job:
    id: int
    folder: Path
    case_id: str
    options: ProcessOptions
    state: JobState
    attempts: int
    pseudonym: str | None
    output: Path | None
    report: Path | None
    output_sha256: str | None
    error: str | None
    error_type: str | None
    cancel_requested: bool
    worker: str | None
    phase: str | None
    fraction: float
    created_utc: str
    started_utc: str | None
    finished_utc: str | None
    seconds: float | None
    #: Which runner claimed the job (see :mod:`endoshare.jobs.runner`); None before its first start.
    runner: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(id=row["id"], folder=_read_path(row["folder"]), case_id=row["case_id"],
                   options=options_from_record(json.loads(row["options"])), state=JobState(row["state"]),
                   attempts=row["attempts"], pseudonym=row["pseudonym"],
                   output=Path(row["output"]) if row["output"] else None,
                   report=Path(row["report"]) if row["report"] else None,
                   output_sha256=row["output_sha256"], error=row["error"], error_type=row["error_type"],
                   cancel_requested=bool(row["cancel_requested"]), worker=row["worker"], phase=row["phase"],
                   fraction=row["fraction"], created_utc=row["created_utc"], started_utc=row["started_utc"],
                   finished_utc=row["finished_utc"], seconds=row["seconds"], runner=row["runner"])

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "case_id": self.case_id, "folder": str(self.folder), "state": self.state,
                "attempts": self.attempts, "pseudonym": self.pseudonym,
                "output": str(self.output) if self.output else None,
                "report": str(self.report) if self.report else None, "output_sha256": self.output_sha256,
                "error": self.error, "error_type": self.error_type, "cancel_requested": self.cancel_requested,
                "worker": self.worker, "phase": self.phase, "fraction": round(self.fraction, 4),
                "created_utc": self.created_utc, "started_utc": self.started_utc,
                "finished_utc": self.finished_utc, "seconds": self.seconds,
                "settings": options_to_record(self.options)}


class JobQueue:
    """The queue database of ``archive_dir``.  Cheap to open; every method is its own transaction."""

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = Path(archive_dir)
        self.path = self.archive_dir / QUEUE_FILE_NAME
        private_dir(self.archive_dir)
        try:
            # SQLite gives the -wal and -shm files the database file's mode: make that one private first.
            os.close(open_private(self.path, os.O_RDWR))
            for sidecar in ("-wal", "-shm"):
                make_private(self.path.with_name(self.path.name + sidecar))
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                       check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "runner" not in columns:         # a queue made by an earlier version
                self._db.execute("ALTER TABLE jobs ADD COLUMN runner TEXT")
            with self._write() as db:
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('token', ?)", (secrets.token_hex(4),))
            self.token: str = self._db.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
        except EndoshareError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise (full_folder_error(exc, self.archive_dir, f"opening the job queue {self.path.name}")
                   or QueueError(f"Cannot open the job queue {self.path} ({exc}); the archive folder must be a "
                                 "writable local folder (SQLite WAL does not work on network shares).",
                                 path=self.path)) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _storage_error(self, exc: sqlite3.Error) -> EndoshareError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc):
            return DiskFullError(f"The archive folder {self.archive_dir} is full: the job queue {self.path.name} "
                                 "cannot record the change (no space left on its disk or quota); free some "
                                 "space there and run 'endoshare queue run' again.", path=self.archive_dir)
        return QueueError(f"The job queue {self.path} cannot record the change ({exc}); check that the archive "
                          "folder is writable and on a local disk, then run again.", path=self.path)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a database that cannot be written raises a typed error naming the archive."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from None
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback()
            raise self._storage_error(exc) from None
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._storage_error(exc) from None

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextlib.contextmanager
    def runner_lock(self) -> Iterator[None]:
        """Held by the one runner of this queue; the OS releases it if the runner dies (even kill -9)."""
        lock = FileLock(str(self.archive_dir / RUNNER_LOCK_NAME), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise QueueBusyError(f"Another 'endoshare queue run' is working on {self.path}; wait for it to "
                                 "finish or stop it first (cases added with 'queue add' meanwhile are picked "
                                 "up by the running one).", path=self.path) from None
        try:
            yield
        finally:
            lock.release()

    # --- reading ---------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise self._missing(job_id)
        return Job.from_row(row)

    def _missing(self, job_id: int) -> JobNotFoundError:
        return JobNotFoundError(f"The queue {self.path} has no job {job_id}; see 'endoshare queue status'.",
                                path=self.path)

    def jobs(self, states: tuple[JobState, ...] = STATES) -> list[Job]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, number in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = number
        return counts

    def next_pending(self, busy_case_ids: set[str], only: frozenset[int] | None = None) -> Job | None:
        """The oldest pending job (of ``only``, if given) whose case is not being processed right now."""
        for row in self._db.execute("SELECT * FROM jobs WHERE state = 'pending' ORDER BY id"):
            if row["case_id"] not in busy_case_ids and (only is None or row["id"] in only):
                return Job.from_row(row)
        return None

    def pending_count(self, only: frozenset[int] | None = None) -> int:
        ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'pending'")]
        return sum(1 for i in ids if only is None or i in only)

    def cancel_requested(self) -> set[int]:
        return {r[0] for r in self._db.execute(
            "SELECT id FROM jobs WHERE state = 'running' AND cancel_requested = 1")}

    def review_rows(self) -> list[sqlite3.Row]:
        """The rows of the ``reviews`` table (see :mod:`endoshare.jobs.review`)."""
        return self._db.execute("SELECT * FROM reviews ORDER BY job_id").fetchall()

    # --- changing ---------------------------------------------------------------------------------------

    def _recorded(self, db: sqlite3.Connection, job_id: int, record: Recorder | None) -> None:
        if record is not None:
            record(Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()))

    def add(self, folder: Path, options: ProcessOptions, case_id: str | None = None,
            record: Recorder | None = None) -> Job:
        folder = Path(folder).absolute()
        resolved_id = case_id_for(folder, case_id)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO jobs (folder, case_id, options, state, created_utc) VALUES (?, ?, ?, 'pending', ?)",
                (_stored_path(folder), resolved_id, json.dumps(options_to_record(options)), utc_now()))
            assert cursor.lastrowid is not None
            self._recorded(db, cursor.lastrowid, record)
        return self.get(cursor.lastrowid)

    def claim(self, job_id: int, runner: str) -> Job | None:
        """pending → running for ``runner``; None if the job left ``pending`` meanwhile (another runner took
        it, or ``queue cancel``).  The pseudonym is kept (a redo publishes under the same name)."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, runner = ?, worker = 'starting', "
                "started_utc = ?, finished_utc = NULL, seconds = NULL, phase = NULL, fraction = 0, "
                "error = NULL, error_type = NULL, output_sha256 = NULL "
                "WHERE id = ? AND state = 'pending'", (runner, utc_now(), job_id)).rowcount
        return self.get(job_id) if changed else None

    def set_pseudonym(self, job_id: int, pseudonym: str) -> Job:
        with self._write() as db:
            db.execute("UPDATE jobs SET pseudonym = ? WHERE id = ?", (pseudonym, job_id))
        return self.get(job_id)

    def set_worker(self, job_id: int, worker: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET worker = ? WHERE id = ?", (worker, job_id))

    def set_progress(self, job_id: int, phase: str, fraction: float) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET phase = ?, fraction = ? WHERE id = ? AND state = 'running'",
                       (phase, fraction, job_id))

    def set_publishing(self, job_id: int, output_sha256: str) -> None:
        """Remember what is about to be published, so that a restart can tell whether it was."""
        with self._write() as db:
            db.execute("UPDATE jobs SET phase = ?, output_sha256 = ? WHERE id = ?",
                       (Phase.PUBLISH, output_sha256, job_id))

    def finish(self, job_id: int, state: JobState, *, output: Path | None = None, report: Path | None = None,
               output_sha256: str | None = None, error: str | None = None,
               error_type: str | None = None, record: Recorder | None = None) -> Job:
        if state not in FINISHED_STATES:
            raise ValueError(f"finish() needs a finished state, not {state!r}")
        now = utc_now()
        with self._write() as db:
            started = db.execute("SELECT started_utc FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            seconds = (round((datetime.fromisoformat(now) - datetime.fromisoformat(started)).total_seconds(), 3)
                       if started else None)
            db.execute(
                "UPDATE jobs SET state = ?, output = ?, report = ?, output_sha256 = COALESCE(?, output_sha256), "
                "error = ?, error_type = ?, finished_utc = ?, seconds = ?, cancel_requested = 0, "
                "phase = CASE WHEN ? = 'done' THEN 'done' ELSE phase END, "
                "fraction = CASE WHEN ? = 'done' THEN 1.0 ELSE fraction END WHERE id = ?",
                (state, str(output) if output else None, str(report) if report else None, output_sha256,
                 error, error_type, now, seconds, state, state, job_id))
            self._recorded(db, job_id, record)
        return self.get(job_id)

    def requeue(self, job_id: int, note: str, record: Recorder | None = None) -> Job:
        """running → pending, keeping the pseudonym so that the redo publishes under the same name."""
        with self._write() as db:
            db.execute("UPDATE jobs SET state = 'pending', worker = NULL, runner = NULL, phase = NULL, fraction = 0, "
                       "cancel_requested = 0, error = ?, error_type = 'Interrupted' WHERE id = ?", (note, job_id))
            self._recorded(db, job_id, record)
        return self.get(job_id)

    def request_cancel(self, job_id: int, record: Recorder | None = None) -> Job:
        """A pending job is cancelled at once; a running one is flagged and its runner stops it."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise self._missing(job_id)
            if row["state"] == JobState.PENDING:
                db.execute("UPDATE jobs SET state = 'cancelled', error = 'cancelled before it started', "
                           "error_type = 'CancelledError', finished_utc = ? WHERE id = ?", (utc_now(), job_id))
            elif row["state"] == JobState.RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise JobStateError(f"Job {job_id} is already {row['state']}; only pending or running jobs can "
                                    "be cancelled.", path=self.path)
            self._recorded(db, job_id, record)
        return self.get(job_id)

    def set_review(self, job_id: int, state: str, *, reviewer: str | None = None, time_utc: str | None = None,
                   spans: str | None = None, output: str | None = None, replaced_by: int | None = None,
                   record: Recorder | None = None) -> None:
        """Store a job's review state (see :mod:`endoshare.jobs.review`), with its audit line."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise self._missing(job_id)
            db.execute("INSERT OR REPLACE INTO reviews (job_id, state, reviewer, time_utc, spans, output, "
                       "replaced_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (job_id, state, reviewer, time_utc or utc_now(), spans, output, replaced_by))
            self._recorded(db, job_id, record)

    def retry(self, job_id: int, record: Recorder | None = None) -> Job:
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise self._missing(job_id)
            if row["state"] not in RETRYABLE_STATES:
                raise JobStateError(f"Job {job_id} is {row['state']}; only failed or cancelled jobs can be "
                                    "retried (add the case again to re-process a done one).", path=self.path)
            db.execute("UPDATE jobs SET state = 'pending', error = NULL, error_type = NULL, cancel_requested = 0, "
                       "finished_utc = NULL, seconds = NULL, phase = NULL, fraction = 0 WHERE id = ?", (job_id,))
            self._recorded(db, job_id, record)
        return self.get(job_id)
