"""File system, queue and identity hardening: folders, permissions, temp files, locks, full disks, options."""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import options
from endoshare import errors
from endoshare.cli import main
from endoshare.identity import MappingRow, MappingStore
from endoshare.jobs import JobQueue, LocalExecutor, add_job, process_batch, run_queue
from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from media import barcode_clip, mapping_rows

sys.path.insert(0, str(Path(__file__).parent))
from test_audio import clip_with_tone  # noqa: E402


def make_case(root: Path, name: str, frames: int = 20) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    barcode_clip(folder / "clip1.mp4", range(frames), width=160, height=90)
    return folder



def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "endoshare", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


# --- (2) the archive never in, at or around the shared folder -------------------------------------------

def test_the_archive_must_lie_apart_from_the_shared_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "link-to-shared").symlink_to(shared)
    for out_dir, archive in ((shared, shared), (shared, shared / "private"), (shared / "videos", shared.parent),
                             (shared, tmp_path / "link-to-shared"), (tmp_path / "link-to-shared", shared / "a")):
        with pytest.raises(ValueError, match="archive folder") as caught:
            ProcessOptions(out_dir=out_dir, archive_dir=archive, detector="none")
        assert isinstance(caught.value, errors.EndoshareError)
    ProcessOptions(out_dir=shared, archive_dir=tmp_path / "archive", detector="none")   # apart: fine


def test_process_refuses_the_shared_folder_as_archive_and_writes_nothing(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P001")
    shared = tmp_path / "shared"
    for archive in (shared, shared / "archive"):
        proc = cli("process", case, "--out", shared, "--archive", archive, "--detector", "none")
        assert proc.returncode == 2, proc.stderr
        assert "archive folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not shared.exists() or not any(shared.rglob("*"))


# --- (3) one permission policy --------------------------------------------------------------------------

def archive_modes(archive: Path) -> dict[str, int]:
    return {str(p.relative_to(archive)): stat.S_IMODE(p.lstat().st_mode) for p in [archive, *archive.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], indirect=True)
def test_archive_is_private_and_shared_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    case = tmp_path / "in" / "P002"
    case.mkdir(parents=True)
    clip_with_tone(case, "a.mp4", range(0, 50), 440)
    # One case through the CLI's single-case path (detections archived), one batch through worker processes.
    assert main(["process", str(case), "--out", str(tmp_path / "shared"), "--archive", str(tmp_path / "archive"),
                 "--keep-audio"]) == 0
    other = make_case(tmp_path / "in", "P003")
    jobs = process_batch([other, make_case(tmp_path / "in", "P004")], options(tmp_path), workers=1)
    assert [job.state for job in jobs] == ["done", "done"]
    modes = archive_modes(tmp_path / "archive")
    assert {"queue.sqlite3", "mapping.csv", "audit.jsonl", "detections"} <= set(modes)
    assert any(name.startswith("detections/") for name in modes)
    for name, mode in modes.items():
        path = tmp_path / "archive" / name
        assert mode == (0o700 if path.is_dir() else 0o600), (name, oct(mode))
    shared = sorted((tmp_path / "shared").iterdir())
    assert len(shared) == 6      # 3 videos and their reports
    for path in shared:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path.name, oct(path.stat().st_mode))


def test_the_runner_lock_and_queue_files_are_private_under_a_loose_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        queue = JobQueue(tmp_path / "archive")
        with queue.runner_lock():
            modes = archive_modes(tmp_path / "archive")
        queue.close()
    finally:
        os.umask(previous)
    assert modes.pop(".") == 0o700
    assert modes and all(mode == 0o600 for mode in modes.values()), modes
    assert {"queue.sqlite3", "queue.runner.lock"} <= set(modes)


# --- (4) temporary files: exclusive, random names --------------------------------------------------------

def test_symlinks_planted_at_the_old_predictable_temp_names_do_not_overwrite_the_mapping(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P005")
    first = process_case(CaseRequest(case), options(tmp_path))
    mapping = tmp_path / "archive" / "mapping.csv"
    before = mapping.read_bytes()
    # Someone who can write to the share knows the pseudonym (it is the output's name) and guesses pids.
    shared = tmp_path / "shared"
    for pid in {os.getpid(), *range(max(2, os.getpid() - 50), os.getpid() + 50)}:
        for name in (f".{first.pseudonym}.report.json.{pid}.tmp", f".{first.pseudonym}.mp4.{pid}.tmp"):
            (shared / name).symlink_to(mapping)
    again = process_case(CaseRequest(case), options(tmp_path))
    assert again.pseudonym == first.pseudonym
    after = mapping.read_bytes()
    assert after.startswith(b"case_id,pseudonym") and after.count(b"\n") == before.count(b"\n")
    assert [r["case_id"] for r in mapping_rows(tmp_path / "archive")] == ["P005"]
    assert json.loads((shared / f"{first.pseudonym}.report.json").read_text())["pseudonym"] == first.pseudonym


def test_a_symlink_at_a_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    from endoshare.storage import write_atomically
    target = tmp_path / "secret.csv"
    target.write_text("keep me")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    write_atomically(link, b"{}\n", 0o644)
    assert target.read_text() == "keep me" and not link.is_symlink() and link.read_text() == "{}\n"


# --- (5) spreadsheet formula injection -------------------------------------------------------------------

@pytest.mark.parametrize("case_id", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tP6", "\rP6",
                                     "'quoted", "''twice", "plain"])
def test_mapping_cells_cannot_be_formulas_and_round_trip(tmp_path: Path, case_id: str) -> None:
    store = MappingStore(tmp_path)
    row = MappingRow(case_id, "p-1", "2026-01-01T00:00:00+00:00", f"{case_id}.mp4 | =b.mp4", "00", "p-1.mp4")
    store.record(row)
    with (tmp_path / "mapping.csv").open(newline="", encoding="utf-8") as fh:
        cells = [cell for line in list(csv.reader(fh))[1:] for cell in line]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells), cells
    assert store.rows() == [row] and store.lookup(case_id) == "p-1"


def test_a_formula_like_patient_id_keeps_its_pseudonym_across_runs(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "case")
    first = process_case(CaseRequest(case, "=1+2"), options(tmp_path))
    again = process_case(CaseRequest(case, "=1+2"), options(tmp_path))
    assert again.pseudonym == first.pseudonym and again.reused_pseudonym
    assert "'=1+2" in (tmp_path / "archive" / "mapping.csv").read_text()


# --- (6) one case, one run at a time ---------------------------------------------------------------------

def test_a_case_locked_by_another_process_is_refused_by_process_and_by_the_queue(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P007")
    archive = tmp_path / "archive"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom endoshare.identity import CaseLock\n"
         f"lock = CaseLock({str(archive)!r}, 'P007')\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = cli("process", case, "--out", tmp_path / "shared", "--archive", archive, "--detector", "none")
        assert proc.returncode == 1 and "being processed by another Endoshare run" in proc.stderr, proc.stderr
        assert cli("queue", "add", case, "--out", tmp_path / "shared", "--archive", archive,
                   "--detector", "none").returncode == 0
        proc = cli("queue", "run", "--archive", archive, "--workers", "1")
        assert proc.returncode == 1 and "being processed by another Endoshare run" in proc.stderr, proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert mapping_rows(archive) == [] and not list((tmp_path / "shared").glob("*.mp4"))
    proc = cli("process", case, "--out", tmp_path / "shared", "--archive", archive, "--detector", "none")
    assert proc.returncode == 0, proc.stderr


def test_two_process_runs_of_one_case_at_once_give_one_pseudonym(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P008", frames=300)
    command = [sys.executable, "-m", "endoshare", "process", str(case), "--out", str(tmp_path / "shared"),
               "--archive", str(tmp_path / "archive"), "--detector", "none", "--mode", "advanced"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read() if run.stderr else "") for run in runs]
    rows = mapping_rows(tmp_path / "archive")
    assert len(rows) == 1, (rows, results)
    assert len(list((tmp_path / "shared").glob("*.mp4"))) == 1
    for code, stderr in results:      # the second one waited its turn (ran after) or was refused clearly
        assert code == 0 or "being processed by another Endoshare run" in stderr, stderr


# --- (7) and (13) batches beside each other; options checked before anything is queued -------------------

def test_a_batch_runs_beside_another_run_of_the_same_archive(tmp_path: Path) -> None:
    cases = [make_case(tmp_path / "in", name) for name in ("A", "B")]
    queue = JobQueue(tmp_path / "archive")
    with queue.runner_lock():            # a 'queue run' (or another batch) is working on this archive
        code = main(["process", *map(str, cases), "--out", str(tmp_path / "shared"),
                     "--archive", str(tmp_path / "archive"), "--detector", "none", "--workers", "1"])
    assert code == 0
    assert sorted(job.state for job in queue.jobs()) == ["done", "done"]
    assert sorted(r["case_id"] for r in mapping_rows(tmp_path / "archive")) == ["A", "B"]


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--workers", "-3"], ["--detector", "nosuch"],
                                 ["--crf", "99"], ["--fps", "0"], ["--height", "4"], ["--segments", "missing.json"],
                                 ["--detector", "oobnet", "--weights", "missing.h5"]])
def test_invalid_options_are_refused_before_any_job_is_queued(tmp_path: Path, bad: list[str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cases = [make_case(tmp_path / "in", name) for name in ("A", "B")]
    code = main(["process", *map(str, cases), "--out", str(tmp_path / "shared"),
                 "--archive", str(tmp_path / "archive"), *bad])
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "archive" / "queue.sqlite3").exists() and not (tmp_path / "shared").exists()


# --- (8) absolute paths in jobs ----------------------------------------------------------------------------

def test_jobs_store_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_case(tmp_path / "in", "A")
    make_case(tmp_path / "in", "B")
    monkeypatch.chdir(tmp_path)
    jobs = process_batch([Path("in/A"), Path("in/B")], ProcessOptions(out_dir=Path("shared"),
                         archive_dir=Path("archive"), detector="none"), workers=1)
    for job in jobs:
        assert job.folder.is_absolute() and job.options.out_dir == tmp_path / "shared"
        assert job.options.archive_dir == tmp_path / "archive"
    monkeypatch.chdir(tmp_path / "in")
    stored = JobQueue(tmp_path / "archive").jobs()
    assert all(job.options.out_dir == tmp_path / "shared" for job in stored)


# --- single-case process is audited ------------------------------------------------------------------------

def test_single_case_process_writes_audit_lines(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P009")
    assert main(["process", str(case), "--out", str(tmp_path / "shared"), "--archive", str(tmp_path / "archive"),
                 "--detector", "none"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "archive" / "audit.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["added", "started", "done"]
    assert lines[-1]["case_id"] == "P009" and lines[-1]["output_sha256"]


# --- (10) what a kill leaves is cleaned; a report never stands without its video ---------------------------

def test_every_kind_of_temp_file_left_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    from endoshare.storage import host_tag, temp_name
    shared, archive = tmp_path / "shared", tmp_path / "archive"
    (archive / "detections").mkdir(parents=True)
    shared.mkdir()
    pid = dead_pid()
    dead = [shared / f".endoshare-p.{host_tag()}.{pid}.{n:016x}{suffix}" for n, suffix in
            enumerate((".mp4.partial", ".mp4.partial.audio", ".x.report.json.tmp", ".write-test"))]
    dead += [archive / f".endoshare-p.{host_tag()}.{pid}.{99:016x}.mapping.csv.tmp",
             archive / "detections" / f".endoshare-p.{host_tag()}.{pid}.{98:016x}.x.json.tmp"]
    live = [shared / temp_name("p", ".mp4.partial")]
    for path in dead + live:
        path.write_bytes(b"half")
    assert main(["process", str(make_case(tmp_path / "in", "P010")), "--out", str(shared),
                 "--archive", str(archive), "--detector", "none"]) == 0
    assert [p for p in dead if p.exists()] == [] and all(p.exists() for p in live)


class Killed(BaseException):
    """Stands for the process dying right there."""


@pytest.mark.parametrize("failure", [Killed, OSError])
def test_no_report_and_no_mapping_row_without_the_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        failure: type[BaseException]) -> None:
    case = make_case(tmp_path / "in", "P011")
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".mp4") and "shared" in str(dst):
            raise failure(errno.EIO, "I/O error") if failure is OSError else failure()
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(failure):
        process_case(CaseRequest(case), options(tmp_path))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list((tmp_path / "shared").glob("*.report.json"))
    assert not list((tmp_path / "shared").glob("*.mp4"))
    if failure is OSError:            # an error (not a kill): the row is taken back
        assert mapping_rows(tmp_path / "archive") == []


# --- (12) full disks ----------------------------------------------------------------------------------------

def full_disk_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every os.write to a file under ``folder`` fails with ENOSPC, as on a full disk."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_full_archive_is_named_and_nothing_is_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(tmp_path / "in", "P012")
    (tmp_path / "archive").mkdir()
    full_disk_under(tmp_path / "archive", monkeypatch)
    with pytest.raises(errors.DiskFullError) as caught:
        process_case(CaseRequest(case), options(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "archive") in message and str(case) not in message and "Errno" not in message
    assert not [p for p in (tmp_path / "shared").iterdir()]
    monkeypatch.undo()
    assert mapping_rows(tmp_path / "archive") == []


def test_a_full_shared_folder_is_named_and_leaves_no_mapping_row(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(tmp_path / "in", "P013")
    (tmp_path / "shared").mkdir()
    full_disk_under(tmp_path / "shared", monkeypatch)        # the report cannot be written
    with pytest.raises(errors.DiskFullError, match="shared is full"):
        process_case(CaseRequest(case), options(tmp_path))
    monkeypatch.undo()
    assert mapping_rows(tmp_path / "archive") == []
    assert not list((tmp_path / "shared").iterdir())


class FullDatabase:
    """The queue's connection, except that recording a finished job fails like a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE jobs SET state = ?"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_full_queue_database_stops_the_run_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    case = make_case(tmp_path / "in", "P014")
    queue = JobQueue(tmp_path / "archive")
    job = add_job(queue, case, options(tmp_path))
    healthy = queue._db
    queue._db = FullDatabase(healthy)  # type: ignore[assignment]
    executor = LocalExecutor(workers=1)
    try:
        with pytest.raises(errors.EndoshareError, match="archive folder .* is full"):
            run_queue(queue, executor)
    finally:
        executor.close()
    queue._db = healthy
    executor = LocalExecutor(workers=1)
    try:
        run_queue(queue, executor)            # the next run settles it: published once, one row
    finally:
        executor.close()
    assert queue.get(job.id).state == "done"
    assert len(mapping_rows(tmp_path / "archive")) == 1
    assert len(list((tmp_path / "shared").glob("*.mp4"))) == 1
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.startswith(".")]


def test_a_queue_jobs_temp_file_is_not_removed_as_stale_while_its_job_may_publish_it(tmp_path: Path) -> None:
    # A worker process renders, hands the file to its coordinator and exits: the file outlives its writer.
    from endoshare.jobs.runner import job_temp_owner
    from endoshare.storage import host_tag, remove_stale
    shared = tmp_path / "shared"
    shared.mkdir()
    rendered = shared / f".endoshare-{job_temp_owner('abcd', 1, 1)}.{host_tag()}.{dead_pid()}.{1:016x}.mp4.partial"
    rendered.write_bytes(b"verified, waiting to be published")
    assert remove_stale(shared) == [] and rendered.exists()
