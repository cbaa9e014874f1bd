"""Running the queue: a coordinator that owns all state, and executors that render cases.

One case is processed in two stages so that only the coordinator ever writes shared state:

* :func:`render_case` (on a worker: a local process, a thread, or a Dask worker) does what
  :func:`endoshare.pipeline.process_case` does up to the verified, checksummed temp file, and returns
  the report and the detection result as data.  It writes nothing but its own temp files, whose owner tag
  ``q<queue token>-j<job>-a<attempt>`` (see :mod:`endoshare.storage`) tells the coordinator whose they are.
* :func:`endoshare.pipeline.publish_case` (on the coordinator) writes the detection result, the mapping row,
  then renames the temp file to ``<pseudonym>.mp4`` — the commit point, as in the core — and the report.

The coordinator (:class:`QueueRun`) claims a job, takes the lock of its case ID in the archive, picks the
pseudonym and stores it in the queue, so a redo after a crash publishes under the same name: there is never
a second output or a second mapping row for a case, even with another run (``process`` or ``queue run``)
working on the same archive at the same time — that one finds the case locked and fails the job with a
clear message.  Each coordinator holds a lock of its own while it lives, so that another one can tell its
``running`` jobs (leave them alone) from those of a coordinator that died (put them back to pending).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue as thread_queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from .. import pipeline
from ..errors import CancelledError, EndoshareError, OptionsError
from ..identity import LOCKS_FOLDER, CaseLock
from ..pipeline import CaseRequest, Phase, ProcessOptions, ProgressEvent, RenderedCase
from ..storage import pid_alive, private_dir, remove_owned
from ..types import Cancel
from .audit import AuditEvent, AuditLog
from .queue import Job, JobQueue, JobState

#: Memory one local worker may need (a 1080p re-encode with detection stays well below this).
MEMORY_PER_WORKER = 1 << 30
#: How long a cancelled worker may take to stop by itself before it is killed.
CANCEL_GRACE_SECONDS = 10.0
#: ``error_type`` of an outcome whose executor went away (e.g. the Dask scheduler died): the job is redone.
EXECUTOR_LOST = "ExecutorLost"


# --- the two stages ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkItem:
    """One attempt of one job: everything a worker needs, picklable."""

    job_id: int
    attempt: int
    folder: Path
    case_id: str
    options: ProcessOptions
    pseudonym: str
    reused_pseudonym: bool
    temp_owner: str


@dataclass(frozen=True)
class Outcome:
    """What a worker hands back; never an exception, so that nothing depends on pickling one."""

    job_id: int
    attempt: int
    rendered: RenderedCase | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.error_type == CancelledError.__name__

    @property
    def lost(self) -> bool:
        return self.error_type == EXECUTOR_LOST


def job_temp_owner(token: str, job_id: int, attempt: int | None = None) -> str:
    """The owner tag of a job attempt's temp files; without ``attempt``, the prefix of all the job's."""
    return f"q{token}-j{job_id}-" + (f"a{attempt}" if attempt is not None else "")


def check_workers(workers: int | None) -> None:
    """The number of local worker processes, checked before anything is queued."""
    if workers is not None and workers < 1:
        raise OptionsError(f"--workers must be at least 1, got {workers}")


def render_case(item: WorkItem, progress: pipeline.ProgressCallback | None = None,
                cancel: Cancel | None = None) -> RenderedCase:
    """Worker side: render and verify one attempt into a temp file named after the job; publish nothing."""
    return pipeline.render_case(CaseRequest(item.folder, item.case_id), item.options, item.pseudonym,
                                reused_pseudonym=item.reused_pseudonym, temp_owner=item.temp_owner,
                                progress=progress, cancel=cancel)


def execute(item: WorkItem, progress: pipeline.ProgressCallback | None = None,
            cancel: Cancel | None = None) -> Outcome:
    """:func:`render_case` with every failure turned into a failed :class:`Outcome` (the worker boundary)."""
    try:
        return Outcome(item.job_id, item.attempt, rendered=render_case(item, progress, cancel))
    except EndoshareError as exc:
        return Outcome(item.job_id, item.attempt, error=str(exc), error_type=type(exc).__name__)
    except Exception as exc:  # a bug or an unexpected library error must fail this job only
        return Outcome(item.job_id, item.attempt, error=f"{item.folder}: {type(exc).__name__}: {exc}",
                       error_type=type(exc).__name__)


class ThrottledProgress:
    """Forwards a core progress event when the phase changes, the phase ends, or enough time passed.

    The core reports every frame; a worker sends far fewer messages without losing the shape of the
    curve (every forwarded event is a real one, in order).
    """

    def __init__(self, send: Callable[[ProgressEvent], None], min_seconds: float = 0.2) -> None:
        self.send = send
        self.min_seconds = min_seconds
        self._last_phase: str | None = None
        self._last_time = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if (event.phase != self._last_phase or event.done >= event.total
                or now - self._last_time >= self.min_seconds):
            self._last_phase, self._last_time = event.phase, now
            self.send(event)


# --- executors -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerProgress:
    job_id: int
    attempt: int
    event: ProgressEvent


@dataclass(frozen=True)
class WorkerFinished:
    outcome: Outcome


WorkerMessage = WorkerProgress | WorkerFinished


class Inbox:
    """Messages from worker threads (or Dask's callbacks) to the coordinator, which takes them in batches."""

    def __init__(self) -> None:
        self._queue: thread_queue.SimpleQueue[WorkerMessage] = thread_queue.SimpleQueue()

    def put(self, message: WorkerMessage) -> None:
        self._queue.put(message)

    def take(self, timeout: float) -> list[WorkerMessage]:
        """Every waiting message, after waiting up to ``timeout`` seconds for the first one."""
        out: list[WorkerMessage] = []
        try:
            out.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
            while True:
                out.append(self._queue.get_nowait())
        except thread_queue.Empty:
            pass
        return out


class Executor(Protocol):
    """Where work items run.  Only the coordinator calls it, from one thread."""

    @property
    def slots(self) -> int: ...

    def submit(self, item: WorkItem) -> str: ...          # returns a worker description

    def cancel(self, job_id: int) -> None: ...

    def events(self, timeout: float) -> list[WorkerMessage]: ...

    def close(self) -> None: ...

    #: True once the executor cannot run anything any more (a Dask scheduler that died).
    lost: bool


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_workers(memory_per_worker: int = MEMORY_PER_WORKER) -> int:
    """One worker per usable CPU, but no more than the available memory can hold."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory = available_memory()
    by_memory = max(1, memory // memory_per_worker) if memory else cpus
    return max(1, min(cpus, by_memory))


def _local_worker_main(item: WorkItem, conn: multiprocessing.connection.Connection, cancel_event: Any,
                       coordinator_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the coordinator decides what it means for this job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def cancelled() -> bool:
        # A coordinator that died (even by kill -9) must not leave workers rendering for nobody.
        return cancel_event.is_set() or os.getppid() != parent or not pid_alive(coordinator_pid)

    def send(event: ProgressEvent) -> None:
        conn.send(WorkerProgress(item.job_id, item.attempt, event))

    outcome = execute(item, ThrottledProgress(send), cancelled)
    try:
        conn.send(WorkerFinished(outcome))
    except OSError:
        if outcome.rendered is not None:      # nobody will publish it
            outcome.rendered.temp.unlink(missing_ok=True)
    conn.close()


def describe_exit(job_id: int, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {"SIGKILL": " (often the out-of-memory killer: try fewer --workers)",
                "SIGSEGV": " (a crash in a media library, likely triggered by this input)"}.get(name, "")
        return f"The worker process of job {job_id} was killed by {name}{hint}; no output was published."
    return (f"The worker process of job {job_id} exited with status {exitcode} without a result; no output "
            "was published.")


@dataclass
class _LocalWorker:
    item: WorkItem
    process: Any
    conn: multiprocessing.connection.Connection
    cancel_event: Any
    cancel_sent: float | None = None
    outcome: Outcome | None = None


class LocalExecutor:
    """One fresh OS process per job, so that a job that crashes its process fails alone."""

    lost = False

    def __init__(self, workers: int | None = None) -> None:
        check_workers(workers)
        self._slots = workers if workers is not None else default_workers()
        if sys.platform.startswith("linux"):
            # A fork server with the pipeline already imported starts a job in milliseconds, and forks
            # from a process that has no threads (the coordinator may have some).
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload([__name__])
        else:
            self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, _LocalWorker] = {}

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, item: WorkItem) -> str:
        receiver, sender = self._ctx.Pipe(duplex=False)
        cancel_event = self._ctx.Event()
        process = self._ctx.Process(target=_local_worker_main, args=(item, sender, cancel_event, os.getpid()),
                                    name=f"endoshare-job-{item.job_id}", daemon=True)
        process.start()
        sender.close()
        self._workers[item.job_id] = _LocalWorker(item, process, receiver, cancel_event)
        return f"local pid {process.pid}"

    def worker_pid(self, job_id: int) -> int | None:
        worker = self._workers.get(job_id)
        return worker.process.pid if worker else None

    def cancel(self, job_id: int) -> None:
        worker = self._workers.get(job_id)
        if worker is not None and worker.cancel_sent is None:
            worker.cancel_event.set()
            worker.cancel_sent = time.monotonic()

    def _drain(self, worker: _LocalWorker, out: list[WorkerMessage]) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, WorkerFinished):
                    worker.outcome = message.outcome
                else:
                    out.append(message)
        except (EOFError, OSError):
            pass

    def events(self, timeout: float) -> list[WorkerMessage]:
        out: list[WorkerMessage] = []
        if not self._workers:
            return out
        waitables = [w.conn for w in self._workers.values()] + [w.process.sentinel for w in self._workers.values()]
        multiprocessing.connection.wait(waitables, timeout)
        for job_id, worker in list(self._workers.items()):
            self._drain(worker, out)
            if worker.process.exitcode is None and worker.outcome is None:
                if worker.cancel_sent is not None and time.monotonic() - worker.cancel_sent > CANCEL_GRACE_SECONDS:
                    worker.process.kill()
                continue
            worker.process.join()
            self._drain(worker, out)       # a result sent just before the exit
            worker.conn.close()
            del self._workers[job_id]
            outcome = worker.outcome
            if outcome is None:
                if worker.cancel_sent is not None:
                    outcome = Outcome(job_id, worker.item.attempt, error="cancelled (worker stopped)",
                                      error_type=CancelledError.__name__)
                else:
                    outcome = Outcome(job_id, worker.item.attempt,
                                      error=describe_exit(job_id, worker.process.exitcode),
                                      error_type="WorkerCrashedError")
            out.append(WorkerFinished(outcome))
        return out

    def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel_event.set()
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            remove_owned(worker.item.options.out_dir, worker.item.temp_owner)
        self._workers.clear()


class ThreadExecutor:
    """Jobs run in threads of the coordinator's own process: ``endoshare process`` with one case (the same
    queue, audit and locks as a batch, without starting a worker process)."""

    lost = False

    def __init__(self, workers: int = 1) -> None:
        check_workers(workers)
        self._slots = workers
        self._inbox = Inbox()
        self._threads: dict[int, tuple[threading.Thread, threading.Event, WorkItem]] = {}

    @property
    def slots(self) -> int:
        return self._slots

    def _work(self, item: WorkItem, cancel: threading.Event) -> None:
        def send(event: ProgressEvent) -> None:
            self._inbox.put(WorkerProgress(item.job_id, item.attempt, event))

        self._inbox.put(WorkerFinished(execute(item, ThrottledProgress(send), cancel.is_set)))

    def submit(self, item: WorkItem) -> str:
        cancel = threading.Event()
        thread = threading.Thread(target=self._work, args=(item, cancel), name=f"endoshare-job-{item.job_id}",
                                  daemon=True)
        self._threads[item.job_id] = (thread, cancel, item)
        thread.start()
        return f"thread of pid {os.getpid()}"

    def cancel(self, job_id: int) -> None:
        if job_id in self._threads:
            self._threads[job_id][1].set()

    def events(self, timeout: float) -> list[WorkerMessage]:
        out = self._inbox.take(timeout)
        for message in out:
            if isinstance(message, WorkerFinished):
                self._threads.pop(message.outcome.job_id, None)
        return out

    def close(self) -> None:
        for thread, cancel, item in self._threads.values():
            cancel.set()
            thread.join()
            remove_owned(item.options.out_dir, item.temp_owner)
        self._threads.clear()


# --- the coordinator -----------------------------------------------------------------------------------

class QueueEventKind(StrEnum):
    """What a :class:`QueueEvent` reports about its job."""

    STARTED = "job-started"
    PROGRESS = "job-progress"
    DONE = "job-done"
    FAILED = "job-failed"
    CANCELLED = "job-cancelled"
    #: Put back to pending (stopped by the user, or its executor was lost): it runs again on the next run.
    INTERRUPTED = "job-interrupted"

    @property
    def finished(self) -> bool:
        """The job left this run (done, failed, cancelled or interrupted)."""
        return self not in (QueueEventKind.STARTED, QueueEventKind.PROGRESS)

    @property
    def label(self) -> str:
        """The kind without its ``job-`` prefix: ``done``, ``failed``..."""
        return self.value.removeprefix("job-")


#: The event that reports a job finishing in each state.
FINISH_EVENTS = {JobState.DONE: QueueEventKind.DONE, JobState.FAILED: QueueEventKind.FAILED,
                 JobState.CANCELLED: QueueEventKind.CANCELLED}


@dataclass(frozen=True)
class QueueEvent:
    """Progress of a run: one job's measured progress and the whole run's, with an ETA."""

    kind: QueueEventKind
    job_id: int
    case_id: str
    phase: str | None
    frames_done: int
    frames_total: int
    job_fraction: float
    overall_fraction: float
    jobs_finished: int
    jobs_total: int
    elapsed_seconds: float
    eta_seconds: float | None
    output: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"event": self.kind, "job": self.job_id, "case_id": self.case_id, "phase": self.phase,
                "done": self.frames_done, "total": self.frames_total, "job_fraction": round(self.job_fraction, 4),
                "overall_fraction": round(self.overall_fraction, 4), "jobs_finished": self.jobs_finished,
                "jobs_total": self.jobs_total, "elapsed_seconds": round(self.elapsed_seconds, 2),
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
                "output": self.output, "error": self.error}


@dataclass(frozen=True)
class RunSummary:
    done: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    cancelled: tuple[int, ...] = ()
    interrupted: tuple[int, ...] = ()
    resumed: tuple[int, ...] = ()


@dataclass
class _Active:
    job: Job
    item: WorkItem
    lock: CaseLock
    phase: str | None = None
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    cancelling: bool = False
    stored_at: float = 0.0


class RunnerLease:
    """The lock a coordinator holds while it lives, named by its id in the queue's ``runner`` column.

    Another coordinator that can take a lease's lock knows that its holder died (the OS frees the lock
    even after kill -9): that holder's ``running`` jobs were interrupted.
    """

    def __init__(self, archive_dir: Path, runner_id: str | None = None) -> None:
        self.id = runner_id or secrets.token_hex(6)
        self._lock = FileLock(str(archive_dir / LOCKS_FOLDER / f"runner-{self.id}.lock"), timeout=0, mode=0o600,
                              thread_local=False)
        self._folder = archive_dir / LOCKS_FOLDER

    def acquire(self) -> None:
        private_dir(self._folder)
        self._lock.acquire()

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def holder_alive(self) -> bool:
        try:
            self._lock.acquire()
        except Timeout:
            return True
        self._lock.release()
        return False


def runner_alive(archive_dir: Path, runner_id: str | None) -> bool:
    return runner_id is not None and RunnerLease(archive_dir, runner_id).holder_alive()


class QueueRun:
    """One run of the coordinator over a queue: which jobs it runs, their progress, and the run's counts.

    :meth:`run` loops: start pending jobs while the executor has free slots, turn worker messages into
    progress, publish what a worker finished.  Every change of a job is one queue transaction with its
    audit line.  A queue that cannot be written any more (a full archive) stops the run cleanly: running
    jobs are cancelled, stay ``running`` under this run's (then released) lease, and the next run puts
    them back to pending.
    """

    def __init__(self, queue: JobQueue, executor: Executor, *, on_event: Callable[[QueueEvent], None] | None = None,
                 stop: Callable[[], bool] | None = None, only: Iterable[int] | None = None,
                 poll_seconds: float = 0.2) -> None:
        self.queue = queue
        self.executor = executor
        self.on_event = on_event
        self.stop = stop
        self.selected = frozenset(only) if only is not None else None
        self.poll_seconds = poll_seconds
        self.audit = AuditLog(queue.archive_dir)
        self.lease = RunnerLease(queue.archive_dir)
        self.clock = time.monotonic()
        self.active: dict[int, _Active] = {}
        self.results: dict[JobState, list[int]] = {JobState.DONE: [], JobState.FAILED: [], JobState.CANCELLED: []}
        self.interrupted: list[int] = []
        self.resumed: list[int] = []
        self.finished_count = 0
        self.pending_count = 0
        self.stopping = False

    # --- the loop --------------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        self.lease.acquire()
        try:
            self.resumed = self.recover()
            self.pending_count = self.queue.pending_count(self.selected)
            while self._step():
                pass
        except BaseException:
            self._abandon()
            raise
        finally:
            self.lease.release()
        return RunSummary(tuple(self.results[JobState.DONE]), tuple(self.results[JobState.FAILED]),
                          tuple(self.results[JobState.CANCELLED]), tuple(self.interrupted), tuple(self.resumed))

    def _step(self) -> bool:
        """One turn of the loop; False when the run is over."""
        if not self.stopping and ((self.stop is not None and self.stop()) or self.executor.lost):
            self._stop_all()
        if not self.stopping:
            for job_id in self.queue.cancel_requested():
                entry = self.active.get(job_id)
                if entry is not None and not entry.cancelling:
                    entry.cancelling = True
                    self.executor.cancel(job_id)
            while len(self.active) < self.executor.slots:
                job = self.queue.next_pending({a.job.case_id for a in self.active.values()}, self.selected)
                if job is None:
                    break
                self.start(job)
            self.pending_count = self.queue.pending_count(self.selected)
        if not self.active and (self.stopping or self.pending_count == 0):
            if self.stopping or not self._selected_running_elsewhere():
                return False
            time.sleep(self.poll_seconds)       # our jobs run in another run: wait for them (or its death)
            self.settle_orphans(self.selected)
            return True
        for message in self.executor.events(self.poll_seconds):
            if isinstance(message, WorkerFinished):
                self.settle(message.outcome)
            else:
                self._progress(message)
        return True

    def _stop_all(self) -> None:
        self.stopping = True
        for job_id in self.active:
            self.executor.cancel(job_id)

    def _selected_running_elsewhere(self) -> bool:
        """A batch (``only``) waits for its jobs that another run took before it could."""
        if self.selected is None:
            return False
        return any(job.id in self.selected and job.id not in self.active
                   for job in self.queue.jobs((JobState.RUNNING,)))

    def _abandon(self) -> None:
        """Leaving on an error (the queue cannot be written, a bug): stop every job of this run, publish
        nothing, remove its temp files and free its case locks.  The jobs stay ``running`` under this
        run's lease, which dies with it: the next run puts them back to pending."""
        for job_id in self.active:
            self.executor.cancel(job_id)
        for entry in self.active.values():
            entry.lock.release()
        self.active.clear()

    # --- events ----------------------------------------------------------------------------------------

    def emit(self, kind: QueueEventKind, entry: _Active, output: str | None = None, error: str | None = None) -> None:
        if self.on_event is None:
            return
        total = self.finished_count + len(self.active) + self.pending_count
        overall = (self.finished_count + sum(a.fraction for a in self.active.values())) / total if total else 1.0
        elapsed = time.monotonic() - self.clock
        eta = elapsed * (1 - overall) / overall if overall > 0 else None
        self.on_event(QueueEvent(kind, entry.job.id, entry.job.case_id, entry.phase, entry.done, entry.total,
                                 entry.fraction, overall, self.finished_count, total, elapsed, eta, output, error))

    def _progress(self, message: WorkerProgress) -> None:
        entry = self.active.get(message.job_id)
        if entry is None or entry.item.attempt != message.attempt:
            return
        event = message.event
        entry.phase, entry.done, entry.total, entry.fraction = event.phase, event.done, event.total, event.fraction
        now = time.monotonic()
        if now - entry.stored_at >= 1.0:      # for 'queue status' in another terminal
            self.queue.set_progress(message.job_id, event.phase, entry.fraction)
            entry.stored_at = now
        self.emit(QueueEventKind.PROGRESS, entry)

    def _finish(self, job_id: int, state: JobState, **fields: Any) -> Job:
        event = AuditEvent(state.value)
        job = self.queue.finish(job_id, state, record=lambda j: self.audit.job_event(event, j), **fields)
        self.finished_count += 1
        self.results[state].append(job_id)
        return job

    # --- recovery, start, settle -----------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Settle the ``running`` jobs of coordinators that died, and remove what killed runs left behind."""
        resumed = self.settle_orphans()
        for options in {job.options for job in self.queue.jobs()}:
            pipeline.remove_stale_temps(options)
        return resumed

    def settle_orphans(self, only: frozenset[int] | None = None) -> list[int]:
        """Jobs left ``running`` by a dead coordinator: done if fully published, else back to pending."""
        resumed = []
        for job in self.queue.jobs((JobState.RUNNING,)):
            if (only is not None and job.id not in only) or job.runner == self.lease.id \
                    or runner_alive(self.queue.archive_dir, job.runner):
                continue
            final = job.options.out_dir / f"{job.pseudonym}.mp4"
            report = job.options.out_dir / f"{job.pseudonym}.report.json"
            if (job.pseudonym and job.output_sha256 and final.is_file() and report.is_file()
                    and pipeline.sha256_of(final) == job.output_sha256):
                # The mapping row comes before the video's rename and the report after it: both there and
                # the checksum right means the job was fully published.
                self.queue.finish(job.id, JobState.DONE, output=final, report=report, output_sha256=job.output_sha256,
                                  record=lambda j: self.audit.job_event(AuditEvent.RESUMED, j,
                                                                        note="published before the runner stopped"))
                resumed.append(job.id)
            else:
                self.queue.requeue(job.id, "interrupted: the runner stopped while this job ran; it will be redone",
                                   record=lambda j: self.audit.job_event(AuditEvent.INTERRUPTED, j))
            remove_owned(job.options.out_dir, job_temp_owner(self.queue.token, job.id))
        return resumed

    def start(self, job: Job) -> None:
        """Claim ``job``, lock its case, choose its pseudonym and hand it to the executor."""
        running = self.queue.claim(job.id, self.lease.id)
        if running is None:      # another run took it, or it was cancelled, between our read and our write
            return
        lock = CaseLock(running.options.archive_dir, running.case_id)
        try:
            lock.acquire()
            pseudonym, reused = pipeline.choose_pseudonym(running.case_id, running.options, running.pseudonym)
        except EndoshareError as exc:     # the case is busy elsewhere, or a corrupt mapping file
            lock.release()
            self._finish(running.id, JobState.FAILED, error=str(exc), error_type=type(exc).__name__)
            self.emit(QueueEventKind.FAILED, _Active(running, self._item(running, "", False), lock), error=str(exc))
            return
        try:
            running = self.queue.set_pseudonym(running.id, pseudonym)
            item = self._item(running, pseudonym, reused)
            entry = _Active(running, item, lock)
            self.active[running.id] = entry
        except BaseException:
            lock.release()
            raise
        worker = self.executor.submit(item)
        self.queue.set_worker(running.id, worker)
        self.pending_count = self.queue.pending_count(self.selected)
        self.audit.job_event(AuditEvent.STARTED, running, worker=worker)
        self.emit(QueueEventKind.STARTED, entry)

    def _item(self, job: Job, pseudonym: str, reused: bool) -> WorkItem:
        return WorkItem(job.id, job.attempts, job.folder, job.case_id, job.options, pseudonym, reused,
                        job_temp_owner(self.queue.token, job.id, job.attempts))

    def settle(self, outcome: Outcome) -> None:
        """A worker finished: publish its output (coordinator only), or record why there is none."""
        entry = self.active.get(outcome.job_id)
        if entry is None or entry.item.attempt != outcome.attempt:
            return
        item = entry.item
        try:
            if outcome.rendered is not None and (entry.cancelling or self.stopping):
                outcome.rendered.temp.unlink(missing_ok=True)
                outcome = Outcome(item.job_id, item.attempt, error="cancelled after rendering; nothing was "
                                  "published", error_type=CancelledError.__name__)
            if outcome.rendered is not None:
                outcome = self._publish(entry, outcome)
                if outcome.rendered is not None:
                    return
            remove_owned(item.options.out_dir, item.temp_owner)
            del self.active[item.job_id]
            if (outcome.cancelled and self.stopping and not entry.cancelling) or outcome.lost:
                note = ("interrupted by the user; it will run again on the next 'queue run'" if not outcome.lost
                        else f"interrupted: {outcome.error}; it will run again on the next 'queue run'")
                job = self.queue.requeue(item.job_id, note,
                                         record=lambda j: self.audit.job_event(AuditEvent.INTERRUPTED, j))
                self.interrupted.append(item.job_id)
                if outcome.lost and not self.stopping:
                    self._stop_all()          # the executor is gone: nothing more can run on it
                self.emit(QueueEventKind.INTERRUPTED, entry, error=job.error)
                return
            state = JobState.CANCELLED if outcome.cancelled else JobState.FAILED
            self._finish(item.job_id, state, error=outcome.error, error_type=outcome.error_type)
            self.emit(FINISH_EVENTS[state], entry, error=outcome.error)
        finally:
            if item.job_id not in self.active:
                entry.lock.release()

    def _publish(self, entry: _Active, outcome: Outcome) -> Outcome:
        """Publish a rendered output; the outcome to record if that failed (``rendered`` None), else itself."""
        item, rendered = entry.item, outcome.rendered
        assert rendered is not None
        self.queue.set_publishing(item.job_id, rendered.output_sha256)
        try:
            result = pipeline.publish_case(rendered, item.options, item.temp_owner)
        except (EndoshareError, OSError) as exc:
            rendered.temp.unlink(missing_ok=True)
            return Outcome(item.job_id, item.attempt, error=f"publishing failed: {exc}",
                           error_type=type(exc).__name__)
        del self.active[item.job_id]
        entry.phase, entry.fraction = Phase.DONE, 1.0
        self._finish(item.job_id, JobState.DONE, output=result.output, report=result.report,
                     output_sha256=rendered.output_sha256)
        self.emit(QueueEventKind.DONE, entry, output=str(result.output))
        return outcome


def run_queue(queue: JobQueue, executor: Executor, *, on_event: Callable[[QueueEvent], None] | None = None,
              stop: Callable[[], bool] | None = None, only: Iterable[int] | None = None,
              poll_seconds: float = 0.2) -> RunSummary:
    """Run every pending job (also those added meanwhile) until none is left or ``stop()`` turns true.

    ``stop`` (Ctrl-C in the CLI) cancels the running jobs and puts them back to pending; ``queue cancel``
    (a flag in the database) cancels one job for good.  Either takes effect at the worker's next
    cancellation poll.  ``only`` restricts the run to some job ids (a ``process`` batch: it may run beside
    another run); without it this is *the* runner of the queue (``queue run``), and a second one is
    refused with :class:`~endoshare.jobs.queue.QueueBusyError`.  A job's failure, or the crash of its
    worker process, fails that job only; a lost executor puts its jobs back to pending.
    """
    run = QueueRun(queue, executor, on_event=on_event, stop=stop, only=only, poll_seconds=poll_seconds)
    if only is not None:
        return run.run()
    with queue.runner_lock():
        return run.run()


def process_batch(folders: Iterable[Path], options: ProcessOptions, *, case_id: str | None = None,
                  workers: int | None = None, on_event: Callable[[QueueEvent], None] | None = None,
                  stop: Callable[[], bool] | None = None, executor: Executor | None = None) -> list[Job]:
    """``endoshare process``: queue the cases in the archive and run just those (in parallel, or in
    ``executor``).

    Because the batch goes through the queue, a crash mid-batch loses nothing: ``endoshare queue run``
    finishes it; and it writes the same audit lines and takes the same case locks as any other run.
    Another run on the same archive (``queue run``, or another ``process``) may work at the same time.
    Returns the jobs in the order of ``folders``.
    """
    folders = list(folders)
    check_workers(workers)
    if executor is None:
        executor = LocalExecutor(workers)
    try:
        with JobQueue(options.archive_dir) as queue:
            added = [add_job(queue, folder, options, case_id) for folder in folders]
            run_queue(queue, executor, on_event=on_event, stop=stop, only=[job.id for job in added])
            return [queue.get(job.id) for job in added]
    finally:
        executor.close()


def process_one(folder: Path, options: ProcessOptions, *, case_id: str | None = None,
                on_event: Callable[[QueueEvent], None] | None = None,
                stop: Callable[[], bool] | None = None) -> Job:
    """One case through the queue, rendered in a thread of this process (``endoshare process CASE_DIR``)."""
    return process_batch([folder], options, case_id=case_id, on_event=on_event, stop=stop,
                         executor=ThreadExecutor(1))[0]


def add_job(queue: JobQueue, folder: Path, options: ProcessOptions, case_id: str | None = None) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.add(folder, options, case_id, record=lambda j: audit.job_event(AuditEvent.ADDED, j))


def cancel_job(queue: JobQueue, job_id: int) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.request_cancel(job_id, record=lambda j: audit.job_event(
        AuditEvent.CANCEL_REQUESTED if j.state == JobState.RUNNING else AuditEvent.CANCELLED, j))


def retry_job(queue: JobQueue, job_id: int) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.retry(job_id, record=lambda j: audit.job_event(AuditEvent.RETRY, j))
