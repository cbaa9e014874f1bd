"""``endoshare queue add|run|status|cancel|retry``: unattended batches from a job queue in the archive."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from ..errors import EndoshareError
from ..jobs.queue import (
    QUEUE_FILE_NAME,
    Job,
    JobNotFoundError,
    JobQueue,
    JobState,
    JobStateError,
    QueueBusyError,
)
from ..jobs.runner import (
    Executor,
    LocalExecutor,
    QueueEvent,
    QueueEventKind,
    RunSummary,
    add_job,
    cancel_job,
    check_workers,
    default_workers,
    retry_job,
    run_queue,
)
from ..types import ExitCode
from . import run_command
from .process import add_process_arguments, options_from_args


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "queue", help="unattended batches: add cases to a crash-safe job queue and run it",
        description="The queue lives in the archive folder (queue.sqlite3, with an audit.jsonl log). "
                    "'queue add' records cases with their settings, 'queue run' processes every pending "
                    "job with parallel workers (or on a Dask cluster) and can be killed and re-run at "
                    "any time without losing work or leaving half-written outputs.")
    add_queue_commands(parser)


def add_queue_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="queue_command", metavar="QUEUE_COMMAND", required=True)

    add = commands.add_parser("add", help="add one job per CASE_DIR, with the given process settings")
    add.add_argument("cases", nargs="+", type=Path, metavar="CASE_DIR")
    _archive_argument(add)
    add_process_arguments(add)
    add.add_argument("--json", action="store_true", help="print the added jobs as JSON")
    add.set_defaults(func=run_add)

    run = commands.add_parser("run", help="process every pending job; safe to kill and re-run")
    _archive_argument(run)
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int,
                       help=f"parallel worker processes on this machine (default here: {default_workers()}, "
                            "from CPU count and available memory)")
    where.add_argument("--cluster", metavar="tcp://HOST:PORT|local:N",
                       help="run on a Dask scheduler, or on a local Dask cluster of N worker processes")
    run.add_argument("--progress", choices=("bar", "json", "none"),
                     help="bar: a live progress bar (default on a terminal); json: one JSON object per line "
                          "on stdout, for other programs; none: only the results")
    run.set_defaults(func=run_run)

    status = commands.add_parser("status", help="list the jobs and their state")
    _archive_argument(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=run_status)

    for name, verb, handler in (("cancel", "cancel a pending or running job (a running one stops within "
                                           "seconds, leaving no partial output)", run_cancel),
                                ("retry", "put a failed or cancelled job back to pending", run_retry)):
        command = commands.add_parser(name, help=verb)
        command.add_argument("job_id", type=int, metavar="ID")
        _archive_argument(command)
        command.set_defaults(func=handler)


def _archive_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", type=Path, required=True,
                        help="private archive folder that holds the queue, the mapping and the audit log")


def _error(message: object) -> None:
    print(f"endoshare queue: {message}", file=sys.stderr)


def _open(archive: Path, *, create: bool = False) -> JobQueue | None:
    """The queue of ``archive``; only ``queue add`` makes a new one (a mistyped --archive must not look like
    an empty queue, nor leave a new private folder behind)."""
    if not create and not (archive / QUEUE_FILE_NAME).is_file():
        _error(f"no queue in {archive}: check --archive (a queue is made by 'endoshare queue add CASE_DIR "
               f"--archive {archive} ...')")
        return None
    try:
        return JobQueue(archive)
    except EndoshareError as exc:
        _error(exc)
        return None


def run_add(args: argparse.Namespace) -> int:
    if args.case_id is not None and len(args.cases) != 1:
        _error("--case-id needs exactly one CASE_DIR")
        return ExitCode.USAGE
    try:
        options = options_from_args(args)       # paths stored absolute: jobs may run from another folder
    except ValueError as exc:
        _error(exc)
        return ExitCode.USAGE
    queue = _open(args.archive, create=True)
    if queue is None:
        return ExitCode.SOME_FAILED
    with queue:
        jobs = [add_job(queue, folder, options, args.case_id) for folder in args.cases]
    if args.json:
        print(json.dumps({"jobs": [j.to_json() for j in jobs]}, ensure_ascii=False))
    else:
        for job in jobs:
            print(f"added   job {job.id}: {job.case_id} ({job.folder})")
    return ExitCode.OK


def _executor(args: argparse.Namespace) -> Executor:
    if args.cluster:
        from ..jobs.cluster import DaskExecutor
        return DaskExecutor(args.cluster)
    return LocalExecutor(args.workers)


class _StopOnInterrupt:
    """First Ctrl-C: stop gracefully (running jobs are cancelled and wait for the next run).  Second: abort."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()
        _error("stopping: cancelling the running jobs (Ctrl-C again to abort at once)...")

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _bar_display(progress: Progress) -> Callable[[QueueEvent], None]:
    overall: TaskID | None = None
    tasks: dict[int, TaskID] = {}

    def show(event: QueueEvent) -> None:
        nonlocal overall
        eta = "" if event.eta_seconds is None else "ETA {}:{:02d}".format(*divmod(int(event.eta_seconds), 60))
        summary = f"all jobs {event.jobs_finished}/{event.jobs_total}"
        if overall is None:
            overall = progress.add_task(summary, total=1.0, eta=eta)
        progress.update(overall, completed=event.overall_fraction, description=summary, eta=eta)
        if event.kind == QueueEventKind.STARTED:
            tasks[event.job_id] = progress.add_task(f"  job {event.job_id} {event.case_id}", total=1.0, eta="")
        elif event.job_id in tasks:
            if event.kind == QueueEventKind.PROGRESS:
                phase = f"{event.phase} {event.frames_done}/{event.frames_total}" if event.phase else ""
                progress.update(tasks[event.job_id], completed=event.job_fraction, eta=phase)
            else:
                progress.remove_task(tasks.pop(event.job_id))
                mark = "ok     " if event.kind == QueueEventKind.DONE else event.kind.label.upper().ljust(7)
                detail = event.output if event.kind == QueueEventKind.DONE else event.error
                progress.console.print(f"{mark} job {event.job_id} {event.case_id}: {detail}", highlight=False,
                                       markup=False)
    return show


def _plain_display(event: QueueEvent) -> None:
    if event.kind == QueueEventKind.DONE:
        print(f"ok      job {event.job_id} {event.case_id} → {event.output}")
    elif event.kind.finished:
        state = event.kind.label.upper().ljust(7)
        print(f"{state} job {event.job_id} {event.case_id}: {event.error}", file=sys.stderr)


def _json_display(event: QueueEvent) -> None:
    print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)


def run_run(args: argparse.Namespace) -> int:
    try:
        check_workers(args.workers)
    except ValueError as exc:
        _error(exc)
        return ExitCode.USAGE
    mode = args.progress or ("bar" if sys.stderr.isatty() else "none")
    queue = _open(args.archive)
    if queue is None:
        return ExitCode.SOME_FAILED
    try:
        executor = _executor(args)
    except ValueError as exc:
        _error(exc)
        return ExitCode.USAGE
    summary: RunSummary | None = None
    try:
        with queue, _StopOnInterrupt() as interrupt:
            if mode == "bar":
                with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                              TextColumn("{task.fields[eta]}"), transient=True) as bar:
                    summary = run_queue(queue, executor, on_event=_bar_display(bar), stop=interrupt.requested.is_set)
            else:
                display = _json_display if mode == "json" else _plain_display
                summary = run_queue(queue, executor, on_event=display, stop=interrupt.requested.is_set)
    except QueueBusyError as exc:
        _error(exc)
        return ExitCode.USAGE
    except EndoshareError as exc:
        _error(exc)
        return ExitCode.SOME_FAILED
    finally:
        executor.close()
    assert summary is not None
    if mode != "json":
        print(f"{len(summary.done)} done, {len(summary.failed)} failed, {len(summary.cancelled)} cancelled"
              + (f", {len(summary.interrupted)} back to pending" if summary.interrupted else "")
              + (f", {len(summary.resumed)} found already published" if summary.resumed else ""), file=sys.stderr)
    if summary.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.SOME_FAILED if summary.failed else ExitCode.OK


def _status_line(job: Job) -> str:
    progress = f"{job.fraction * 100:5.1f}% {job.phase or ''}".rstrip() if job.state == JobState.RUNNING else ""
    detail = str(job.output) if job.state == JobState.DONE else (job.error or "")
    return f"{job.id:>5}  {job.state:<9} {job.attempts:>2}  {job.case_id}  {progress}  {detail}".rstrip()


def run_status(args: argparse.Namespace) -> int:
    queue = _open(args.archive)
    if queue is None:
        return ExitCode.SOME_FAILED
    with queue:
        jobs = queue.jobs()
        counts = queue.counts()
    if args.json:
        print(json.dumps({"queue": str(queue.path), "counts": counts, "jobs": [j.to_json() for j in jobs]},
                         ensure_ascii=False))
        return ExitCode.OK
    print("   ID  STATE     TRY CASE / PROGRESS / OUTPUT OR ERROR")
    for job in jobs:
        print(_status_line(job))
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    return ExitCode.OK


def _change(args: argparse.Namespace, change: Callable[[JobQueue, int], Job], verb: str) -> int:
    queue = _open(args.archive)
    if queue is None:
        return ExitCode.SOME_FAILED
    with queue:
        try:
            job = change(queue, args.job_id)
        except (JobNotFoundError, JobStateError) as exc:
            _error(exc)
            return ExitCode.USAGE
    note = " (the runner stops it within seconds)" if job.state == JobState.RUNNING else ""
    print(f"{verb} job {job.id}: {job.case_id} is now {job.state}{note}")
    return ExitCode.OK


def run_cancel(args: argparse.Namespace) -> int:
    return _change(args, cancel_job, "cancel")


def run_retry(args: argparse.Namespace) -> int:
    return _change(args, retry_job, "retry")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m endoshare.cli.queue COMMAND ...`` (the same as ``endoshare queue COMMAND ...``)."""
    parser = argparse.ArgumentParser(prog="endoshare queue")
    add_queue_commands(parser)
    return run_command(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
