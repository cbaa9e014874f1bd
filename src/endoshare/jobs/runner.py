"""Running the queue: a coordinator that owns all state, and executors that render cases.

One case is processed in two stages so that only the coordinator ever writes shared state:

* :func:`render_case` (on a worker: a local process or a Dask worker) does what
  :func:`endoshare.pipeline.process_case` does up to the verified, checksummed temp file, and returns
  the report and the detection result as data.  It writes nothing but its own temp file, named
  ``.endoshare-<queue token>-j<job>-a<attempt>-*.mp4.partial`` so that the coordinator knows whose it is.
* :func:`publish_case` (on the coordinator) writes the detection result, the mapping row and the report,
  then renames the temp file to ``<pseudonym>.mp4`` — the commit point, as in the core.

The coordinator (:func:`run_queue`) picks the pseudonym before a job starts and stores it in the queue,
so a redo after a crash publishes under the same name: there is never a second output or a second
mapping row for a case.  It never runs two jobs of the same case at once for the same reason.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol


from .. import pipeline
from ..errors import (CancelledError, EndoshareError)
from ..identity import MappingStore, new_pseudonym
from ..pipeline import CaseRequest, ProcessOptions, ProgressEvent, RenderedCase
from .audit import AuditLog
from .queue import Job, JobQueue

#: Memory one local worker may need (a 1080p re-encode with detection stays well below this).
MEMORY_PER_WORKER = 1 << 30
#: How long a cancelled worker may take to stop by itself before it is killed.
CANCEL_GRACE_SECONDS = 10.0
PARTIAL_SUFFIX = ".mp4.partial"


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
    temp_prefix: str


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


def temp_prefix(token: str, job_id: int, attempt: int) -> str:
    # Starts like the core's temp files (".endoshare-"), so that every tool treats it as unpublished.
    return f".endoshare-{token}-j{job_id}-a{attempt}-"


def remove_partials(out_dir: Path, prefix: str) -> list[Path]:
    removed = []
    try:
        candidates = list(out_dir.glob(f"{prefix}*{PARTIAL_SUFFIX}"))
    except OSError:
        return removed
    for path in candidates:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def render_case(item: WorkItem, progress: pipeline.ProgressCallback | None = None,
                cancel: pipeline.Cancel | None = None) -> RenderedCase:
    """Worker side: render and verify one attempt into a temp file named after the job; publish nothing."""
    return pipeline.render_case(CaseRequest(item.folder, item.case_id), item.options, item.pseudonym,
                                reused_pseudonym=item.reused_pseudonym, temp_prefix=item.temp_prefix,
                                progress=progress, cancel=cancel)


def execute(item: WorkItem, progress: pipeline.ProgressCallback | None = None,
            cancel: pipeline.Cancel | None = None) -> Outcome:
    """:func:`render_case` with every failure turned into a failed :class:`Outcome` (the worker boundary)."""
    try:
        return Outcome(item.job_id, item.attempt, rendered=render_case(item, progress, cancel))
    except EndoshareError as exc:
        return Outcome(item.job_id, item.attempt, error=str(exc), error_type=type(exc).__name__)
    except Exception as exc:  # a bug or an unexpected library error must fail this job only
        return Outcome(item.job_id, item.attempt, error=f"{item.folder}: {type(exc).__name__}: {exc}",
                       error_type=type(exc).__name__)


def publish_case(item: WorkItem, rendered: RenderedCase) -> tuple[Path, Path]:
    """Coordinator only: detection result, mapping row, report, then the rename that publishes."""
    result = pipeline.publish_case(rendered, item.options)
    assert result.output is not None and result.report is not None
    return result.output, result.report


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


class Executor(Protocol):
    """Where work items run.  Only the coordinator calls it, from one thread."""

    @property
    def slots(self) -> int: ...

    def submit(self, item: WorkItem) -> str: ...          # returns a worker description

    def cancel(self, job_id: int) -> None: ...

    def events(self, timeout: float) -> list[WorkerProgress | WorkerFinished]: ...

    def close(self) -> None: ...


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_worker_main(item: WorkItem, conn: multiprocessing.connection.Connection, cancel_event: Any,
                       coordinator_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the coordinator decides what it means for this job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def cancelled() -> bool:
        # A coordinator that died (even by kill -9) must not leave workers rendering for nobody.
        return cancel_event.is_set() or os.getppid() != parent or not _pid_alive(coordinator_pid)

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

    def __init__(self, workers: int | None = None) -> None:
        self._slots = workers if workers is not None else default_workers()
        if self._slots < 1:
            raise ValueError(f"--workers must be at least 1, got {self._slots}")
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

    def _drain(self, worker: _LocalWorker, out: list[WorkerProgress | WorkerFinished]) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, WorkerFinished):
                    worker.outcome = message.outcome
                else:
                    out.append(message)
        except (EOFError, OSError):
            pass

    def events(self, timeout: float) -> list[WorkerProgress | WorkerFinished]:
        out: list[WorkerProgress | WorkerFinished] = []
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
            remove_partials(worker.item.options.out_dir, worker.item.temp_prefix)
        self._workers.clear()


# --- the coordinator -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueEvent:
    """Progress of a run: one job's measured progress and the whole run's, with an ETA."""

    kind: str            # job-started, job-progress, job-done, job-failed, job-cancelled, job-interrupted
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
    phase: str | None = None
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    cancelling: bool = False
    stored_at: float = 0.0


def recover(queue: JobQueue, audit: AuditLog) -> tuple[list[int], list[int]]:
    """Settle jobs a dead runner left ``running``, and remove their temp files.  Needs the runner lock."""
    resumed, requeued = [], []
    for job in queue.jobs(("running",)):
        final = job.options.out_dir / f"{job.pseudonym}.mp4"
        report = job.options.out_dir / f"{job.pseudonym}.report.json"
        if (job.pseudonym and job.output_sha256 and final.is_file() and report.is_file()
                and pipeline.sha256_of(final) == job.output_sha256):
            # Mapping row and report come before the rename, so a renamed output is fully published.
            queue.finish(job.id, "done", output=final, report=report, output_sha256=job.output_sha256,
                         record=lambda j: audit.job_event("resumed", j, note="published before the runner stopped"))
            resumed.append(job.id)
        else:
            queue.requeue(job.id, "interrupted: the runner stopped while this job ran; it will be redone",
                          record=lambda j: audit.job_event("interrupted", j))
            requeued.append(job.id)
    out_dirs = {job.options.out_dir for job in queue.jobs()}
    for out_dir in out_dirs:
        remove_partials(out_dir, f".endoshare-{queue.token}-")
    for job in queue.jobs():
        if job.pseudonym:
            for stale in job.options.out_dir.glob(f".{job.pseudonym}.report.json.*.tmp"):
                stale.unlink(missing_ok=True)
    return resumed, requeued


def run_queue(queue: JobQueue, executor: Executor, *, on_event: Callable[[QueueEvent], None] | None = None,
              stop: Callable[[], bool] | None = None, only: Iterable[int] | None = None,
              poll_seconds: float = 0.2) -> RunSummary:
    """Run every pending job (also those added meanwhile) until none is left or ``stop()`` turns true.

    ``stop`` (Ctrl-C in the CLI) cancels the running jobs and puts them back to pending; ``queue cancel``
    (a flag in the database) cancels one job for good.  Either takes effect at the worker's next
    cancellation poll.  ``only`` restricts the run to some job ids.  A job's failure, or the crash of its
    worker process, fails that job only.
    """
    audit = AuditLog(queue.archive_dir)
    selected = frozenset(only) if only is not None else None
    with queue.runner_lock():
        resumed, _ = recover(queue, audit)
        clock = time.monotonic()
        active: dict[int, _Active] = {}
        results: dict[str, list[int]] = {"done": [], "failed": [], "cancelled": [], "interrupted": []}
        finished_count = 0
        pending_count = queue.pending_count(selected)
        stopping = False

        def emit(kind: str, entry: _Active, output: str | None = None, error: str | None = None) -> None:
            if on_event is None:
                return
            total = finished_count + len(active) + pending_count
            overall = (finished_count + sum(a.fraction for a in active.values())) / total if total else 1.0
            elapsed = time.monotonic() - clock
            eta = elapsed * (1 - overall) / overall if overall > 0 else None
            on_event(QueueEvent(kind, entry.job.id, entry.job.case_id, entry.phase, entry.done, entry.total,
                                entry.fraction, overall, finished_count, total, elapsed, eta, output, error))

        def start(job: Job) -> None:
            nonlocal pending_count, finished_count
            try:
                previous = MappingStore(job.options.archive_dir).lookup(job.case_id)
            except EndoshareError as exc:      # e.g. a corrupt mapping file: this job cannot get a pseudonym
                queue.finish(job.id, "failed", error=str(exc), error_type=type(exc).__name__,
                             record=lambda j: audit.job_event("failed", j))
                results["failed"].append(job.id)
                finished_count += 1
                return
            if job.pseudonym:
                pseudonym = job.pseudonym
            else:
                pseudonym = (None if job.options.new_pseudonym else previous) or new_pseudonym()
            running = queue.start(job.id, pseudonym, "starting")
            if running is None:      # cancelled between our read and our write
                return
            item = WorkItem(running.id, running.attempts, running.folder, running.case_id, running.options,
                            pseudonym, previous == pseudonym, temp_prefix(queue.token, running.id, running.attempts))
            worker = executor.submit(item)
            queue.set_worker(running.id, worker)
            entry = _Active(running, item)
            active[running.id] = entry
            pending_count = queue.pending_count(selected)
            audit.job_event("started", running, worker=worker)
            emit("job-started", entry)

        def settle(outcome: Outcome) -> None:
            nonlocal finished_count
            entry = active.get(outcome.job_id)
            if entry is None or entry.item.attempt != outcome.attempt:
                return
            item = entry.item
            if outcome.rendered is not None and (entry.cancelling or stopping):
                outcome.rendered.temp.unlink(missing_ok=True)
                outcome = Outcome(item.job_id, item.attempt, error="cancelled after rendering; nothing was "
                                  "published", error_type=CancelledError.__name__)
            if outcome.rendered is not None:
                queue.set_publishing(item.job_id, outcome.rendered.output_sha256)
                try:
                    final, report = publish_case(item, outcome.rendered)
                except (EndoshareError, OSError) as exc:
                    outcome.rendered.temp.unlink(missing_ok=True)
                    outcome = Outcome(item.job_id, item.attempt, error=f"publishing failed: {exc}",
                                      error_type=type(exc).__name__)
                else:
                    queue.finish(item.job_id, "done", output=final, report=report,
                                 output_sha256=outcome.rendered.output_sha256,
                                 record=lambda j: audit.job_event("done", j))
                    del active[item.job_id]
                    finished_count += 1
                    entry.phase, entry.fraction = "done", 1.0
                    results["done"].append(item.job_id)
                    emit("job-done", entry, output=str(final))
                    return
            remove_partials(item.options.out_dir, item.temp_prefix)
            del active[item.job_id]
            if outcome.cancelled and stopping and not entry.cancelling:
                job = queue.requeue(item.job_id, "interrupted by the user; it will run again on the next "
                                    "'queue run'", record=lambda j: audit.job_event("interrupted", j))
                results["interrupted"].append(item.job_id)
                emit("job-interrupted", entry, error=job.error)
                return
            state = "cancelled" if outcome.cancelled else "failed"
            job = queue.finish(item.job_id, state, error=outcome.error, error_type=outcome.error_type,
                               record=lambda j: audit.job_event(state, j))
            finished_count += 1
            results[state].append(item.job_id)
            emit(f"job-{state}", entry, error=outcome.error)

        while True:
            if not stopping and stop is not None and stop():
                stopping = True
                for job_id in active:
                    executor.cancel(job_id)
            if not stopping:
                for job_id in queue.cancel_requested():
                    if job_id in active and not active[job_id].cancelling:
                        active[job_id].cancelling = True
                        executor.cancel(job_id)
                while len(active) < executor.slots:
                    job = queue.next_pending({a.job.case_id for a in active.values()}, selected)
                    if job is None:
                        break
                    start(job)
                pending_count = queue.pending_count(selected)
            if not active and (stopping or pending_count == 0):
                break
            for message in executor.events(poll_seconds):
                if isinstance(message, WorkerFinished):
                    settle(message.outcome)
                    continue
                entry = active.get(message.job_id)
                if entry is None or entry.item.attempt != message.attempt:
                    continue
                event = message.event
                entry.phase, entry.done, entry.total = event.phase, event.done, event.total
                entry.fraction = event.fraction
                now = time.monotonic()
                if now - entry.stored_at >= 1.0:      # for 'queue status' in another terminal
                    queue.set_progress(message.job_id, event.phase, entry.fraction)
                    entry.stored_at = now
                emit("job-progress", entry)
    return RunSummary(tuple(results["done"]), tuple(results["failed"]), tuple(results["cancelled"]),
                      tuple(results["interrupted"]), tuple(resumed))


def process_batch(folders: Iterable[Path], options: ProcessOptions, *, case_id: str | None = None,
                  workers: int | None = None, on_event: Callable[[QueueEvent], None] | None = None,
                  stop: Callable[[], bool] | None = None) -> list[Job]:
    """``endoshare process`` with several cases: queue them in the archive and run just those, in parallel.

    Because the batch goes through the queue, a crash mid-batch loses nothing: ``endoshare queue run``
    finishes it.  Returns the jobs in the order of ``folders``.
    """
    with JobQueue(options.archive_dir) as queue:
        added = [add_job(queue, folder, options, case_id) for folder in folders]
        executor = LocalExecutor(workers)
        try:
            run_queue(queue, executor, on_event=on_event, stop=stop, only=[job.id for job in added])
        finally:
            executor.close()
        return [queue.get(job.id) for job in added]


def add_job(queue: JobQueue, folder: Path, options: ProcessOptions, case_id: str | None = None) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.add(folder, options, case_id, record=lambda j: audit.job_event("added", j))


def cancel_job(queue: JobQueue, job_id: int) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.request_cancel(job_id, record=lambda j: audit.job_event(
        "cancel-requested" if j.state == "running" else "cancelled", j))


def retry_job(queue: JobQueue, job_id: int) -> Job:
    audit = AuditLog(queue.archive_dir)
    return queue.retry(job_id, record=lambda j: audit.job_event("retry", j))
