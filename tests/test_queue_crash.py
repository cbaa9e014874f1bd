"""kill -9 of the queue runner at random moments, then run again: nothing is lost, duplicated or half-written.

Each round starts ``endoshare queue run`` as a separate process, kills it with SIGKILL after a random
number of its progress lines (seeded, so a failure can be replayed), and checks the invariants on disk.
When every job is done, the cases are added again (re-processing must reuse each case's pseudonym), so
that every kill lands in a run with work in it.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from endoshare.jobs import AuditLog, JobQueue, add_job
from endoshare.pipeline import ProcessOptions
from endoshare.render.common import EncodeSettings
from media import barcode_clip, decoded_frames, mapping_rows

SEED = 20261124
KILLS = 12
FRAMES = {"alpha": 200, "beta": 200, "gamma": 150, "delta": 160}


def make_cases(tmp_path: Path) -> dict[str, ProcessOptions]:
    """Four cases, each with other settings: stream copy, re-encode, redaction, slow re-encode."""
    root = tmp_path / "in"
    (root / "alpha").mkdir(parents=True)
    barcode_clip(root / "alpha" / "VID1.mp4", range(0, 120))
    barcode_clip(root / "alpha" / "VID2.mp4", range(120, 200))
    for name in ("beta", "gamma", "delta"):
        (root / name).mkdir()
        barcode_clip(root / name / "VID1.mp4", range(FRAMES[name]))
    segments = tmp_path / "gamma-segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": 10, "end_frame": 40}]}))
    base = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none")
    return {"alpha": base,
            "beta": ProcessOptions(**{**base.__dict__, "mode": "advanced"}),
            "gamma": ProcessOptions(**{**base.__dict__, "segments_file": segments}),
            "delta": ProcessOptions(**{**base.__dict__, "mode": "advanced",
                                       "encode": EncodeSettings(preset="slower")})}


def wait_until_gone(pids: list[int], timeout: float = 20.0) -> None:
    """Workers notice a dead coordinator at their next cancellation poll and stop by themselves."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return
        assert time.monotonic() < deadline, f"orphaned worker processes {alive} kept running"
        time.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:          # it ended between two looks
        return False


def check_invariants(tmp_path: Path) -> dict[str, str]:
    out, archive = tmp_path / "shared", tmp_path / "archive"
    rows = mapping_rows(archive)
    per_case = Counter(r["case_id"] for r in rows)
    assert all(n == 1 for n in per_case.values()), f"a case has several mapping rows: {per_case}"
    case_of = {r["pseudonym"]: r["case_id"] for r in rows}
    finals = sorted(p for p in out.glob("*.mp4") if not p.name.startswith(".")) if out.exists() else []
    for final in finals:
        assert final.stem in case_of, f"{final.name} was published without a mapping row"
        # A final name always holds a whole, decodable video of the right length.
        assert len(decoded_frames(final)) == FRAMES[case_of[final.stem]], f"{final.name} is incomplete"
    assert len(finals) <= len(FRAMES)
    for report in (out.glob("*.report.json") if out.exists() else []):
        if not report.name.startswith("."):
            assert json.loads(report.read_text())["output"]["file"] == report.name.replace(".report.json", ".mp4")
    return {r["case_id"]: r["pseudonym"] for r in rows}


@pytest.mark.slow
def test_runner_survives_kill_9_at_random_moments(tmp_path: Path) -> None:
    cases = make_cases(tmp_path)
    archive = tmp_path / "archive"
    queue = JobQueue(archive)
    rng = random.Random(SEED)
    command = [sys.executable, "-m", "endoshare.cli.queue", "run", "--archive", str(archive), "--workers", "2",
               "--progress", "json"]
    pseudonyms: dict[str, str] = {}
    kills_with_running_jobs = 0
    for _ in range(KILLS):
        if queue.counts()["pending"] == 0:
            for name, options in cases.items():
                add_job(queue, tmp_path / "in" / name, options)
        runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert runner.stdout is not None
        # Early enough that a loaded machine (fewer, throttled progress lines) still kills mid-run.
        target = rng.randint(1, 25)
        for number, _line in enumerate(runner.stdout, start=1):
            if number >= target:
                break
        runner.kill()
        runner.wait(timeout=30)
        runner.stdout.close()
        running = queue.jobs(("running",))
        kills_with_running_jobs += bool(running)
        wait_until_gone([int(j.worker.rsplit(" ", 1)[1]) for j in running if j.worker and "pid" in j.worker])
        now = check_invariants(tmp_path)
        for case_id, pseudonym in pseudonyms.items():
            assert now[case_id] == pseudonym, "re-processing must keep the case's pseudonym"
        pseudonyms = now

    final = subprocess.run(command[:-2] + ["--progress", "none"], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert kills_with_running_jobs >= KILLS // 2, "too few kills landed while jobs were running"

    jobs = queue.jobs()
    assert jobs and all(j.state == "done" for j in jobs), [(j.id, j.state, j.error) for j in jobs]
    pseudonyms = check_invariants(tmp_path)
    assert sorted(pseudonyms) == sorted(FRAMES)
    out = tmp_path / "shared"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p}.mp4" for p in pseudonyms.values()] + [f"{p}.report.json" for p in pseudonyms.values()]), \
        "no temp file, partial file or duplicate output is left"
    for row in mapping_rows(archive):
        digest = hashlib.sha256((out / row["output_file"]).read_bytes()).hexdigest()
        report = json.loads((out / f"{row['pseudonym']}.report.json").read_text())
        assert digest == row["output_sha256"] == report["output"]["sha256"]
    for job in jobs:
        assert job.pseudonym == pseudonyms[job.case_id]
    records = AuditLog(archive).records()
    assert any(r["event"] in ("interrupted", "resumed") for r in records), "no kill interrupted a job"
    for job in jobs:   # the audit line is written inside the transaction that marks the job done
        assert any(r["job_id"] == job.id and r["event"] in ("done", "resumed")
                   and r["output_sha256"] == job.output_sha256 for r in records), f"job {job.id} not audited"
