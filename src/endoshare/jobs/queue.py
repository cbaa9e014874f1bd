"""The job queue of one archive folder: an SQLite database in WAL mode.

Each job is one case with the options it was added with.  States::

    pending ──start──▶ running ──▶ done | failed | cancelled
       ▲                  │
       └── requeue ───────┘   (the runner stopped or crashed while the job ran; it is redone)
    failed | cancelled ──retry──▶ pending

Every change is one short ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL``, so that a power cut
leaves the database as it was after the last committed change.  Only one runner may work on a queue at a
time (:meth:`JobQueue.runner_lock`, an OS file lock that dies with its process), so a job found
``running`` when a runner starts was interrupted and belongs to nobody.  WAL needs a local file system:
the archive folder must not be on a network share.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from ..errors import EndoshareError
from ..pipeline import ProcessOptions
from ..render.common import EncodeSettings, Redaction

QUEUE_FILE_NAME = "queue.sqlite3"
RUNNER_LOCK_NAME = "queue.runner.lock"
STATES = ("pending", "running", "done", "failed", "cancelled")
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})
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
    seconds REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
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
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def options_to_record(options: ProcessOptions) -> dict[str, Any]:
    """Every field of ``options``, paths included (``ProcessOptions.to_json`` leaves paths out on purpose)."""
    encode = options.encode
    return {
        "out_dir": str(options.out_dir), "archive_dir": str(options.archive_dir), "mode": options.mode,
        "redaction": options.redaction.value,
        "segments_file": str(options.segments_file) if options.segments_file else None,
        "detector": options.detector, "weights": str(options.weights) if options.weights else None,
        "encode": {"codec": encode.codec, "crf": encode.crf, "preset": encode.preset,
                   "frame_rate": str(encode.frame_rate) if encode.frame_rate is not None else None,
                   "height": encode.height},
        "new_pseudonym": options.new_pseudonym, "verify": options.verify, "keep_audio": options.keep_audio,
        "margin_seconds": str(options.margin_seconds),
        "mask_overlays": options.mask_overlays, "keep_device_settings": options.keep_device_settings,
    }


def options_from_record(record: dict[str, Any]) -> ProcessOptions:
    encode = record["encode"]
    return ProcessOptions(
        out_dir=Path(record["out_dir"]), archive_dir=Path(record["archive_dir"]), mode=record["mode"],
        redaction=Redaction(record["redaction"]),
        segments_file=Path(record["segments_file"]) if record["segments_file"] else None,
        detector=record["detector"], weights=Path(record["weights"]) if record["weights"] else None,
        encode=EncodeSettings(codec=encode["codec"], crf=encode["crf"], preset=encode["preset"],
                              frame_rate=Fraction(encode["frame_rate"]) if encode["frame_rate"] else None,
                              height=encode["height"]),
        new_pseudonym=bool(record["new_pseudonym"]), verify=record.get("verify", "full"),
        keep_audio=bool(record.get("keep_audio", False)),
        margin_seconds=Fraction(record.get("margin_seconds", "1/2")),
        # A record from before overlay masking existed is masked: the safe reading of a missing field.
        mask_overlays=bool(record.get("mask_overlays", True)),
        keep_device_settings=bool(record.get("keep_device_settings", False)))


@dataclass(frozen=True)
class Job:
    id: int
    folder: Path
    case_id: str
    options: ProcessOptions
    state: str
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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(id=row["id"], folder=Path(row["folder"]), case_id=row["case_id"],
                   options=options_from_record(json.loads(row["options"])), state=row["state"],
                   attempts=row["attempts"], pseudonym=row["pseudonym"],
                   output=Path(row["output"]) if row["output"] else None,
                   report=Path(row["report"]) if row["report"] else None,
                   output_sha256=row["output_sha256"], error=row["error"], error_type=row["error_type"],
                   cancel_requested=bool(row["cancel_requested"]), worker=row["worker"], phase=row["phase"],
                   fraction=row["fraction"], created_utc=row["created_utc"], started_utc=row["started_utc"],
                   finished_utc=row["finished_utc"], seconds=row["seconds"])

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
        try:
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                       check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            with self._write() as db:
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('token', ?)", (secrets.token_hex(4),))
            self.token: str = self._db.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"Cannot open the job queue {self.path} ({exc}); the archive folder must be a "
                             "writable local folder (SQLite WAL does not work on network shares).",
                             path=self.path) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def runner_lock(self) -> Iterator[None]:
        """Held by the one runner of this queue; the OS releases it if the runner dies (even kill -9)."""
        lock = FileLock(str(self.archive_dir / RUNNER_LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise QueueBusyError(f"Another 'endoshare queue run' is working on {self.path}; wait for it to "
                                 "finish or stop it first.", path=self.path) from None
        try:
            yield
        finally:
            lock.release()

    # --- reading ---------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"The queue {self.path} has no job {job_id}; see 'endoshare queue status'.",
                                   path=self.path)
        return Job.from_row(row)

    def jobs(self, states: tuple[str, ...] = STATES) -> list[Job]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, number in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = number
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

    # --- changing ---------------------------------------------------------------------------------------

    def _recorded(self, db: sqlite3.Connection, job_id: int, record: Recorder | None) -> None:
        if record is not None:
            record(Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()))

    def add(self, folder: Path, options: ProcessOptions, case_id: str | None = None,
            record: Recorder | None = None) -> Job:
        folder = Path(folder).absolute()
        resolved_id = case_id if case_id is not None else folder.resolve().name
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO jobs (folder, case_id, options, state, created_utc) VALUES (?, ?, ?, 'pending', ?)",
                (str(folder), resolved_id, json.dumps(options_to_record(options)), utc_now()))
            assert cursor.lastrowid is not None
            self._recorded(db, cursor.lastrowid, record)
        return self.get(cursor.lastrowid)

    def start(self, job_id: int, pseudonym: str, worker: str) -> Job | None:
        """pending → running; None if the job left ``pending`` meanwhile (e.g. ``queue cancel``)."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, pseudonym = ?, worker = ?, "
                "started_utc = ?, finished_utc = NULL, seconds = NULL, phase = NULL, fraction = 0, "
                "error = NULL, error_type = NULL, output_sha256 = NULL "
                "WHERE id = ? AND state = 'pending'", (pseudonym, worker, utc_now(), job_id)).rowcount
        return self.get(job_id) if changed else None

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
            db.execute("UPDATE jobs SET phase = 'publish', output_sha256 = ? WHERE id = ?",
                       (output_sha256, job_id))

    def finish(self, job_id: int, state: str, *, output: Path | None = None, report: Path | None = None,
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
            db.execute("UPDATE jobs SET state = 'pending', worker = NULL, phase = NULL, fraction = 0, "
                       "cancel_requested = 0, error = ?, error_type = 'Interrupted' WHERE id = ?", (note, job_id))
            self._recorded(db, job_id, record)
        return self.get(job_id)

    def request_cancel(self, job_id: int, record: Recorder | None = None) -> Job:
        """A pending job is cancelled at once; a running one is flagged and its runner stops it."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"The queue {self.path} has no job {job_id}; see 'endoshare queue "
                                       "status'.", path=self.path)
            if row["state"] == "pending":
                db.execute("UPDATE jobs SET state = 'cancelled', error = 'cancelled before it started', "
                           "error_type = 'CancelledError', finished_utc = ? WHERE id = ?", (utc_now(), job_id))
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise JobStateError(f"Job {job_id} is already {row['state']}; only pending or running jobs can "
                                    "be cancelled.", path=self.path)
            self._recorded(db, job_id, record)
        return self.get(job_id)

    def retry(self, job_id: int, record: Recorder | None = None) -> Job:
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"The queue {self.path} has no job {job_id}; see 'endoshare queue "
                                       "status'.", path=self.path)
            if row["state"] not in ("failed", "cancelled"):
                raise JobStateError(f"Job {job_id} is {row['state']}; only failed or cancelled jobs can be "
                                    "retried (add the case again to re-process a done one).", path=self.path)
            db.execute("UPDATE jobs SET state = 'pending', error = NULL, error_type = NULL, cancel_requested = 0, "
                       "finished_utc = NULL, seconds = NULL, phase = NULL, fraction = 0 WHERE id = ?", (job_id,))
            self._recorded(db, job_id, record)
        return self.get(job_id)
