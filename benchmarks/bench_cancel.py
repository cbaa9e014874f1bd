"""Benchmark: how quickly a cancel request stops a running job, against how often the job reports progress.

Usage::

    python benchmarks/bench_cancel.py [--frames 400] [--repeat 3]

The tests used to assert that a cancel took effect within 3 or 5 seconds; on a loaded machine that flaked,
so the tests now check *that* the job stopped mid-render (a frame count) and this script measures *how fast*,
relative to a baseline taken in the same run: the median interval between two render progress events of the
same job (the granularity at which the renderer can notice a cancel).  It prints, for each run, the seconds
from ``cancel_job`` to the ``job-cancelled`` event and that latency divided by the progress interval: a
ratio near 1-3 means the cancel is noticed at the next progress check; a large ratio means something between
the checks does not poll it.

This is not a test; pytest does not collect it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from endoshare import synthetic
from endoshare.jobs import JobQueue, LocalExecutor, QueueEvent, add_job, cancel_job, run_queue
from endoshare.pipeline import ProcessOptions
from endoshare.render.common import EncodeSettings
from endoshare.sample import write_clip


def make_case(root: Path, frames: int) -> Path:
    folder = root / "case"
    folder.mkdir(parents=True)
    write_clip(folder / "clip1.mp4", (synthetic.inbody_frame(np.random.default_rng(1), 320, 180, i / 25)
                                      for i in range(frames)), gop=50)
    return folder


def one_run(root: Path, case: Path) -> tuple[float, float]:
    """(seconds from the cancel request to the job-cancelled event, median seconds between progress events)."""
    archive = root / "archive"
    queue = JobQueue(archive)
    options = ProcessOptions(out_dir=root / "shared", archive_dir=archive, detector="none", mode="advanced",
                             encode=EncodeSettings(preset="veryslow"))
    job = add_job(queue, case, options)
    progress_times: list[float] = []
    moments: dict[str, float] = {}

    def on_event(event: QueueEvent) -> None:
        now = time.perf_counter()
        if event.job_id != job.id:
            return
        if event.phase == "render" and "requested" not in moments:
            progress_times.append(now)
            if len(progress_times) == 6:          # a few intervals measured first: the baseline
                cancel_job(JobQueue(archive), job.id)
                moments["requested"] = time.perf_counter()
        if event.kind == "job-cancelled":
            moments["cancelled"] = now

    executor = LocalExecutor(workers=1)
    try:
        run_queue(queue, executor, on_event=on_event)
    finally:
        executor.close()
    if "cancelled" not in moments:
        raise SystemExit("the job finished before it could be cancelled: use more --frames")
    intervals = [b - a for a, b in zip(progress_times, progress_times[1:], strict=False)]
    return moments["cancelled"] - moments["requested"], statistics.median(intervals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400, help="frames of the generated case (default 400)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="endoshare-bench-cancel-") as temp:
        case = make_case(Path(temp) / "in", args.frames)
        for number in range(args.repeat):
            latency, interval = one_run(Path(temp) / f"run{number}", case)
            print(f"run {number + 1}: cancel took {latency:.2f} s; progress every {interval:.2f} s; "
                  f"ratio {latency / interval:.1f}", flush=True)


if __name__ == "__main__":
    main()
