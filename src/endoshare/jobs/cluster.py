"""Scale-out on Dask distributed: one case is one task; the coordinator keeps all state.

Workers run :func:`endoshare.jobs.runner.execute` (render + verify into a temp file on the shared output
folder) and return an :class:`~endoshare.jobs.runner.Outcome`; the coordinator — the process running
``endoshare queue run --cluster ...`` — publishes it (mapping row, report, rename) and writes the queue
database and the audit log.  Workers therefore need the case folders and the output folder at the *same
paths* as the coordinator (shared storage), but never the archive folder.

Progress travels as Dask events (``Worker.log_event`` → ``Client.subscribe_topic``); cancellation is a
named ``distributed.Event`` per job attempt that the task polls.

If the scheduler dies (or the connection to it is lost), Dask marks every task "cancelled" at once; a task
we did not cancel ourselves is reported as lost (:data:`~endoshare.jobs.runner.EXECUTOR_LOST`), and the
coordinator puts its job back to pending and stops: the next ``queue run`` processes it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import dask
from distributed import Client, Event, LocalCluster, get_worker

from ..errors import CancelledError
from ..pipeline import Phase, ProgressEvent
from .runner import (
    EXECUTOR_LOST,
    Inbox,
    Outcome,
    ThrottledProgress,
    WorkerFinished,
    WorkerMessage,
    WorkerProgress,
    WorkItem,
    execute,
)

#: How often a task asks the scheduler whether it was cancelled (each poll is a round trip).
CANCEL_POLL_SECONDS = 0.5
#: A task whose worker died this many times is failed (default Dask is 3: one bad case would kill 4 workers).
ALLOWED_FAILURES = 1


def _run_on_worker(item: WorkItem, topic: str, cancel_name: str) -> Outcome:
    worker = get_worker()
    cancel_event = Event(cancel_name)
    last_poll = 0.0
    cancelled = False

    def cancel() -> bool:
        nonlocal last_poll, cancelled
        now = time.monotonic()
        if not cancelled and now - last_poll >= CANCEL_POLL_SECONDS:
            last_poll = now
            cancelled = cancel_event.is_set()
        return cancelled

    def send(event: ProgressEvent) -> None:
        # Dask's events are msgpack: plain values only (the phase's value, not the enum member).
        worker.log_event(topic, {"job": item.job_id, "attempt": item.attempt, "phase": event.phase.value,
                                 "done": event.done, "total": event.total, "fraction": event.fraction})

    return execute(item, ThrottledProgress(send, min_seconds=0.5), cancel)


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """``local:N`` → ("local", N); ``tcp://host:port`` → ("address", spec)."""
    if spec.startswith("local:"):
        count = spec.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--cluster {spec!r}: write local:N with N ≥ 1 worker processes, e.g. local:2")
        return "local", int(count)
    if "://" in spec:
        return "address", spec
    raise ValueError(f"--cluster {spec!r} is neither local:N nor a scheduler address like tcp://host:8786")


class DaskExecutor:
    """Runs work items as Dask tasks on a running scheduler or on a LocalCluster it starts."""

    def __init__(self, spec: str, *, local_host: str = "127.0.0.1") -> None:
        kind, value = parse_cluster(spec)
        self._config = dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
        self._config.__enter__()
        self.cluster: LocalCluster | None = None
        if kind == "local":
            assert isinstance(value, int)
            self.cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                        host=local_host, dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            self.client = Client(str(value))
        scheduler = self.client.scheduler
        assert scheduler is not None, "a Client that connected has its scheduler's address"
        self._address = scheduler.address
        self._token = uuid.uuid4().hex[:8]
        self._topic = f"endoshare-progress-{self._token}"
        self._inbox = Inbox()
        self._futures: dict[int, Any] = {}
        self._items: dict[int, WorkItem] = {}
        self._slots_checked = 0.0
        self._slots = 0
        self._cancelled: set[int] = set()
        #: The scheduler went away: nothing more can run here.
        self.lost = False
        self.client.subscribe_topic(self._topic, self._on_progress)

    def _on_progress(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        self._inbox.put(WorkerProgress(msg["job"], msg["attempt"],
                                       ProgressEvent(Phase(msg["phase"]), msg["done"], msg["total"], msg["fraction"])))

    @property
    def slots(self) -> int:
        # Workers may join or leave a running cluster; ask the scheduler now and then.
        if self.lost:
            return 0
        now = time.monotonic()
        if now - self._slots_checked > 2.0:
            try:
                self._slots = sum(self.client.nthreads().values())
            except (OSError, TimeoutError):       # CommClosedError is an OSError
                self.lost = True
                return 0
            self._slots_checked = now
        return self._slots

    def _cancel_name(self, item: WorkItem) -> str:
        return f"endoshare-cancel-{self._token}-{item.job_id}-{item.attempt}"

    def submit(self, item: WorkItem) -> str:
        future = self.client.submit(_run_on_worker, item, self._topic, self._cancel_name(item),
                                    key=f"endoshare-job-{item.job_id}-a{item.attempt}-{self._token}",
                                    pure=False, retries=0)
        self._futures[item.job_id] = future
        self._items[item.job_id] = item
        future.add_done_callback(lambda f, item=item: self._on_done(item, f))
        return f"dask {self._address}"

    def _on_done(self, item: WorkItem, future: Any) -> None:
        if future.status == "finished":
            outcome = future.result()
        elif future.status == "cancelled" and item.job_id in self._cancelled:
            outcome = Outcome(item.job_id, item.attempt, error="cancelled", error_type=CancelledError.__name__)
        elif future.status == "cancelled":
            # Not by us: the scheduler died or the connection to it was lost.
            self.lost = True
            outcome = Outcome(item.job_id, item.attempt,
                              error=f"the Dask scheduler {self._address} went away while job {item.job_id} ran",
                              error_type=EXECUTOR_LOST)
        else:
            exc = future.exception()
            outcome = Outcome(item.job_id, item.attempt,
                              error=f"the Dask task of job {item.job_id} failed: {type(exc).__name__}: {exc} "
                                    "(a KilledWorker means the case crashed its worker process)",
                              error_type=type(exc).__name__)
        self._inbox.put(WorkerFinished(outcome))

    def cancel(self, job_id: int) -> None:
        item = self._items.get(job_id)
        if item is not None and not self.lost:
            self._cancelled.add(job_id)
            Event(self._cancel_name(item), client=self.client).set()

    def events(self, timeout: float) -> list[WorkerMessage]:
        out = self._inbox.take(timeout)
        for message in out:
            if isinstance(message, WorkerFinished):
                self._futures.pop(message.outcome.job_id, None)
                self._items.pop(message.outcome.job_id, None)
        return out

    def close(self) -> None:
        for job_id in list(self._items):
            self.cancel(job_id)
        try:
            if not self.lost:
                self.client.unsubscribe_topic(self._topic)
            self.client.close(timeout=5 if self.lost else None)
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self._config.__exit__(None, None, None)
