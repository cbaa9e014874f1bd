"""Unattended batches: a crash-safe job queue per archive folder, local worker processes, Dask scale-out.

:mod:`.queue` holds the state (SQLite), :mod:`.runner` the coordinator and the local executor,
:mod:`.cluster` the Dask executor, :mod:`.audit` the append-only audit log.
"""

from .audit import AuditLog
from .queue import Job, JobNotFoundError, JobQueue, JobStateError, QueueBusyError, QueueError
from .runner import (
                     LocalExecutor,
                     QueueEvent,
                     QueueRun,
                     RunSummary,
                     ThreadExecutor,
                     add_job,
                     cancel_job,
                     default_workers,
                     process_batch,
                     process_one,
                     retry_job,
                     run_queue,
)

__all__ = ["AuditLog", "Job", "JobNotFoundError", "JobQueue", "JobStateError", "LocalExecutor", "QueueBusyError",
           "QueueError", "QueueEvent", "QueueRun", "RunSummary", "ThreadExecutor", "add_job", "cancel_job",
           "default_workers", "process_batch", "process_one", "retry_job", "run_queue"]
