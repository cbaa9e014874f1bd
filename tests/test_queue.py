"""The job queue: states, parallel local workers, failures that stay local, real progress, cancellation."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import options
from endoshare.jobs import (
    AuditLog,
    JobQueue,
    JobStateError,
    LocalExecutor,
    QueueBusyError,
    QueueEvent,
    add_job,
    cancel_job,
    default_workers,
    process_batch,
    retry_job,
    run_queue,
)
from endoshare.jobs.queue import options_from_record, options_to_record
from endoshare.jobs.runner import job_temp_owner
from endoshare.pipeline import ProcessOptions
from endoshare.render.common import EncodeSettings, Redaction
from endoshare.storage import temp_name
from media import barcode_clip, decoded_frames, read_barcode


def make_case(root: Path, name: str, *clip_frames: int, width: int = 160, height: int = 90) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    start = 0
    for number, frames in enumerate(clip_frames, start=1):
        barcode_clip(folder / f"clip{number}.mp4", range(start, start + frames), width=width, height=height)
        start += frames
    return folder


def make_bad_case(root: Path, name: str = "bad") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "clip1.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)   # no moov
    return folder



def mapping_rows(archive: Path) -> list[dict[str, str]]:
    with (archive / "mapping.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if p.name.startswith("."))


def test_options_survive_the_database_round_trip(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"segments": []}')
    (tmp_path / "w.h5").write_bytes(b"weights")
    original = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a", mode="advanced",
                              redaction=Redaction.BLUR, segments_file=tmp_path / "s.json", detector="builtin",
                              weights=tmp_path / "w.h5", new_pseudonym=True,
                              encode=EncodeSettings(codec="hevc", crf=30, preset="slow",
                                                    frame_rate=Fraction(30000, 1001), height=240))
    assert options_from_record(json.loads(json.dumps(options_to_record(original)))) == original
    queue = JobQueue(tmp_path / "a")
    job = add_job(queue, tmp_path / "case", original)
    assert JobQueue(tmp_path / "a").get(job.id).options == original
    assert queue._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_parallel_run_isolates_a_bad_case_and_a_crashed_worker(tmp_path: Path) -> None:
    cases = [make_case(tmp_path / "in", f"case{n}", 40 + 10 * n) for n in range(4)]
    bad = make_bad_case(tmp_path / "in")
    queue = JobQueue(tmp_path / "archive")
    jobs = [add_job(queue, folder, options(tmp_path)) for folder in [cases[0], bad, *cases[1:]]]
    # Long enough to be surely still rendering when its worker process is killed (as the OOM killer would).
    victim = add_job(queue, make_case(tmp_path / "in", "victim", 200, width=320, height=180),
                     options(tmp_path, mode="advanced", encode=EncodeSettings(preset="veryslow")))
    jobs.insert(2, victim)
    executor = LocalExecutor(workers=2)
    seen_pids: set[int] = set()
    killed: list[int] = []

    def on_event(event: QueueEvent) -> None:
        pid = executor.worker_pid(event.job_id)
        if pid is not None:
            seen_pids.add(pid)
        if event.job_id == victim.id and event.phase == "render" and not killed and pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        summary = run_queue(queue, executor, on_event=on_event)
    finally:
        executor.close()
    assert killed, "the victim job never reported progress"
    assert len(seen_pids) == len(jobs), "each job runs in its own worker process"
    states = {job.id: queue.get(job.id) for job in jobs}
    assert sorted(summary.done) == sorted(j.id for j in jobs if j.id not in (victim.id, jobs[1].id))
    assert states[jobs[1].id].state == "failed" and states[jobs[1].id].error_type == "UnreadableMediaError"
    assert str(bad / "clip1.mp4") in states[jobs[1].id].error
    assert states[victim.id].state == "failed" and "killed by SIGKILL" in states[victim.id].error
    rows = mapping_rows(tmp_path / "archive")
    assert sorted(r["case_id"] for r in rows) == ["case0", "case1", "case2", "case3"]
    for row in rows:
        output = tmp_path / "shared" / row["output_file"]
        assert sha256(output) == row["output_sha256"]
        expected = 40 + 10 * int(row["case_id"][-1])
        assert [read_barcode(f) for f in decoded_frames(output)] == list(range(expected))
    assert leftovers(tmp_path / "shared") == []
    for job in jobs:
        assert states[job.id].attempts == 1 and states[job.id].seconds is not None


def test_progress_is_measured_monotonic_and_ends_at_one(tmp_path: Path) -> None:
    cases = [make_case(tmp_path / "in", "two-clips", 50, 30), make_case(tmp_path / "in", "one-clip", 60)]
    bad = make_bad_case(tmp_path / "in")
    queue = JobQueue(tmp_path / "archive")
    jobs = [add_job(queue, folder, options(tmp_path, mode="advanced")) for folder in [*cases, bad]]
    events: list[QueueEvent] = []
    executor = LocalExecutor(workers=2)
    try:
        run_queue(queue, executor, on_event=events.append)
    finally:
        executor.close()
    overall = [e.overall_fraction for e in events]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)
    assert events[-1].jobs_finished == events[-1].jobs_total == 3
    assert events[-1].eta_seconds == pytest.approx(0.0, abs=1e-6)
    assert all(e.eta_seconds is None or e.eta_seconds >= 0 for e in events)
    frames = {jobs[0].id: 80, jobs[1].id: 60}
    for job_id, total_frames in frames.items():
        mine = [e for e in events if e.job_id == job_id]
        fractions = [e.job_fraction for e in mine]
        assert fractions == sorted(fractions), "a job's progress never goes back"
        assert mine[0].kind == "job-started" and mine[-1].kind == "job-done" and fractions[-1] == 1.0
        phases = [e.phase for e in mine if e.kind == "job-progress"]
        changes = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
        assert changes == ["probe", "overlays", "render", "verify"]
        render = [e for e in mine if e.phase == "render"]
        assert {e.frames_total for e in render} == {total_frames}, "render progress counts the case's frames"
        assert render[-1].frames_done == total_frames
        assert len({e.job_fraction for e in mine}) >= 4, "progress moves in measured steps, not all at once"
    failed = [e for e in events if e.job_id == jobs[2].id]
    assert failed[-1].kind == "job-failed" and failed[-1].job_fraction < 1.0


def test_queue_cancel_stops_a_running_job_quickly_without_partial_output(tmp_path: Path) -> None:
    long_case = make_case(tmp_path / "in", "long", 400, width=320, height=180)
    short_case = make_case(tmp_path / "in", "short", 30)
    queue = JobQueue(tmp_path / "archive")
    slow = options(tmp_path, mode="advanced", encode=EncodeSettings(preset="veryslow"))
    long_job = add_job(queue, long_case, slow)
    short_job = add_job(queue, short_case, options(tmp_path))
    other_connection = JobQueue(tmp_path / "archive")     # as 'endoshare queue cancel' from another terminal
    requested: list[int] = []          # the long job's frame total, once the cancel is requested
    rendered_after: list[int] = []     # its frame counts reported after that

    def on_event(event: QueueEvent) -> None:
        if event.job_id == long_job.id and event.phase == "render" and requested:
            rendered_after.append(event.frames_done)
        if event.job_id == long_job.id and event.phase == "render" and not requested:
            assert event.frames_done < event.frames_total
            assert list((tmp_path / "shared").glob(".endoshare-*.partial")), "the render writes a temp file"
            cancel_job(other_connection, long_job.id)
            requested.append(event.frames_total)

    executor = LocalExecutor(workers=2)
    try:
        summary = run_queue(queue, executor, on_event=on_event)
    finally:
        executor.close()
    assert summary.cancelled == (long_job.id,) and summary.done == (short_job.id,)
    # Stopped mid-render, not at the end of it (a count, not a time bound: those flake under load).
    assert all(done < requested[0] for done in rendered_after), (rendered_after, requested)
    assert queue.get(long_job.id).state == "cancelled"
    assert "after rendering" not in queue.get(long_job.id).error, "stopped mid-render, not after it"
    assert [r["case_id"] for r in mapping_rows(tmp_path / "archive")] == ["short"]
    assert [p.suffix for p in (tmp_path / "shared").iterdir()] .count(".mp4") == 1
    assert leftovers(tmp_path / "shared") == []
    with pytest.raises(JobStateError):
        cancel_job(queue, long_job.id)
    assert retry_job(queue, long_job.id).state == "pending"
    events = [r["event"] for r in AuditLog(tmp_path / "archive").records() if r["job_id"] == long_job.id]
    assert events == ["added", "started", "cancel-requested", "cancelled", "retry"]


def test_audit_log_records_user_settings_result_and_checksum(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "case-a", 30)
    queue = JobQueue(tmp_path / "archive")
    job = add_job(queue, case, options(tmp_path, redaction=Redaction.BLUR))
    executor = LocalExecutor(workers=1)
    try:
        run_queue(queue, executor)
    finally:
        executor.close()
    done = queue.get(job.id)
    records = AuditLog(tmp_path / "archive").records()
    assert [r["event"] for r in records] == ["added", "started", "done"]
    last = records[-1]
    assert last["user"] and last["time_utc"].endswith("+00:00")
    assert last["settings"]["redaction"] == "blur" and last["settings"]["out_dir"] == str(tmp_path / "shared")
    assert last["state"] == "done" and last["output"] == str(done.output)
    assert last["output_sha256"] == sha256(done.output) == done.output_sha256
    assert not list((tmp_path / "shared").glob("*.jsonl")), "the audit log stays in the archive"
    assert (tmp_path / "archive" / "audit.jsonl").stat().st_mode & 0o077 == 0


def test_a_second_runner_is_refused_and_pseudonyms_are_reused(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "case-b", 20)
    queue = JobQueue(tmp_path / "archive")
    first = add_job(queue, case, options(tmp_path))
    executor = LocalExecutor(workers=1)
    try:
        with queue.runner_lock():
            with pytest.raises(QueueBusyError):
                run_queue(JobQueue(tmp_path / "archive"), executor)
        assert queue.get(first.id).state == "pending"
        run_queue(queue, executor)
        second = add_job(queue, case, options(tmp_path))
        run_queue(queue, executor)
    finally:
        executor.close()
    assert queue.get(first.id).pseudonym == queue.get(second.id).pseudonym
    assert len(mapping_rows(tmp_path / "archive")) == 1
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == sorted(
        [f"{queue.get(first.id).pseudonym}.mp4", f"{queue.get(first.id).pseudonym}.report.json"])
    assert 1 <= default_workers() <= (os.cpu_count() or 1)
    assert default_workers(memory_per_worker=1 << 60) == 1


def run_cli(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "endoshare.cli.queue", *map(str, args)], capture_output=True,
                          text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def test_cli_add_run_status_retry_and_ctrl_c(tmp_path: Path) -> None:
    long_case = make_case(tmp_path / "in", "long", 400, width=320, height=180)
    bad = make_bad_case(tmp_path / "in")
    archive, shared = tmp_path / "archive", tmp_path / "shared"
    added = run_cli("add", long_case, "--out", shared, "--archive", archive, "--mode", "advanced",
                    "--preset", "veryslow", "--detector", "none", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["jobs"][0]["settings"]["encode"]["preset"] == "veryslow"
    assert run_cli("add", bad, "--out", shared, "--archive", archive, "--detector", "none").returncode == 0
    assert run_cli("add", bad, "--out", shared, "--archive", archive, "--crf", "99").returncode == 2

    runner = subprocess.Popen([sys.executable, "-m", "endoshare.cli.queue", "run", "--archive", str(archive),
                               "--workers", "1", "--progress", "json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    # Ctrl-C as soon as the long job has started: this test reads the events through a pipe and may lag
    # seconds behind the runner on a loaded machine; waiting for a render event once let the job finish
    # before the signal was even sent (exit 0, nothing to interrupt).
    for line in runner.stdout:
        event = json.loads(line)
        if event["event"] == "job-started":
            runner.send_signal(signal.SIGINT)
            break
    rest = [json.loads(line) for line in runner.stdout.read().splitlines()]
    assert runner.wait(timeout=30) == 130, (rest, runner.stderr.read() if runner.stderr else "")
    # Interrupted before the render ended (a count, not a time bound: those flake under load).
    assert all(e["done"] < e["total"] for e in rest if e["event"] == "job-progress" and e["phase"] == "render"), rest
    assert rest[-1]["event"] == "job-interrupted"
    # Nothing left in the shared folder (the job may have been stopped before it made that folder).
    assert not shared.exists() or (leftovers(shared) == [] and not list(shared.glob("*.mp4")))
    status = json.loads(run_cli("status", "--archive", archive, "--json").stdout)
    assert status["counts"]["pending"] == 2

    finished = run_cli("run", "--archive", archive, "--workers", "2", "--progress", "none")
    assert finished.returncode == 1, finished.stderr            # the bad case failed, the long one is done
    assert "1 done, 1 failed" in finished.stderr
    jobs = {j["case_id"]: j for j in json.loads(run_cli("status", "--archive", archive, "--json").stdout)["jobs"]}
    assert jobs["long"]["state"] == "done" and jobs["long"]["attempts"] == 2
    assert jobs["bad"]["state"] == "failed" and "clip1.mp4" in jobs["bad"]["error"]
    assert run_cli("retry", jobs["long"]["id"], "--archive", archive).returncode == 2
    assert run_cli("cancel", 999, "--archive", archive).returncode == 2
    retried = run_cli("retry", jobs["bad"]["id"], "--archive", archive)
    assert retried.returncode == 0 and "pending" in retried.stdout
    text = run_cli("status", "--archive", archive).stdout
    assert "done" in text and "pending" in text


def test_a_job_published_just_before_the_kill_is_resumed_not_redone(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "case-c", 25)
    [job] = process_batch([case], options(tmp_path), workers=1)
    output = job.output
    assert job.state == "done" and output is not None
    before = (output.stat().st_mtime_ns, sha256(output))
    # The database as a runner killed right after the rename (the commit point) leaves it.
    queue = JobQueue(tmp_path / "archive")
    queue._db.execute("UPDATE jobs SET state = 'running', phase = 'publish' WHERE id = ?", (job.id,))
    # A temp file of that job (made by a worker on any machine: its process id says nothing here).
    stale = tmp_path / "shared" / temp_name(job_temp_owner(queue.token, job.id, 1), ".mp4.partial")
    stale.write_bytes(b"half a video")
    foreign = tmp_path / "shared" / ".endoshare-abcd1234.mp4.partial"      # another program's temp file
    foreign.write_bytes(b"not ours")
    executor = LocalExecutor(workers=1)
    try:
        summary = run_queue(queue, executor)
    finally:
        executor.close()
    assert summary.resumed == (job.id,) and summary.done == ()
    assert queue.get(job.id).state == "done" and queue.get(job.id).attempts == 1
    assert (output.stat().st_mtime_ns, sha256(output)) == before
    assert not stale.exists() and foreign.exists()
    assert len(mapping_rows(tmp_path / "archive")) == 1
    assert [r["event"] for r in AuditLog(tmp_path / "archive").records()][-1] == "resumed"


def test_queue_command_registers_under_the_endoshare_parser(tmp_path: Path) -> None:
    import argparse

    from endoshare.cli import queue as queue_cli
    parser = argparse.ArgumentParser(prog="endoshare")
    queue_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["queue", "run", "--archive", str(tmp_path), "--cluster", "local:2", "--progress", "json"])
    assert args.func is queue_cli.run_run and args.cluster == "local:2" and args.workers is None
    with pytest.raises(SystemExit):
        parser.parse_args(["queue", "run", "--archive", str(tmp_path), "--workers", "2", "--cluster", "local:2"])
    # A mistyped archive is an error naming it, not an empty queue, and leaves no folder behind.
    args = parser.parse_args(["queue", "status", "--archive", str(tmp_path / "new"), "--json"])
    assert args.func(args) != 0 and not (tmp_path / "new").exists()
    for command in (["run"], ["retry", "1"], ["cancel", "1"]):
        result = run_cli(*command, "--archive", tmp_path / "typo")
        assert result.returncode != 0 and f"no queue in {tmp_path / 'typo'}" in result.stderr, result.stderr
        assert not (tmp_path / "typo").exists()
