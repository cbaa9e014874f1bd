"""Pseudonyms, the mapping file under concurrency, and the command line."""

from __future__ import annotations

import csv
import json
import multiprocessing
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from endoshare.cli import main
from endoshare.identity import MappingRow, MappingStore, new_pseudonym
from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.sample import make_sample_case
from endoshare.storage import host_tag
from media import barcode_clip


def test_pseudonyms_are_random_uuid4() -> None:
    values = {new_pseudonym() for _ in range(1000)}
    assert len(values) == 1000
    assert all(uuid.UUID(v).version == 4 for v in values)


def _write_rows(archive: str, writer: int, count: int) -> None:
    store = MappingStore(Path(archive))
    for n in range(count):
        store.record(MappingRow(f"case-{writer}-{n}", new_pseudonym(), "2026-01-01T00:00:00+00:00",
                                f"clip {n}, \"quoted\".mp4 | other.mp4", "ab" * 32, f"{n}.mp4"))


@pytest.mark.slow
def test_concurrent_writers_lose_and_tear_no_row(tmp_path: Path) -> None:
    writers, per_writer = 8, 50
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_rows, args=(str(tmp_path), w, per_writer)) for w in range(writers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0
    path = tmp_path / "mapping.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "case_id" and rows.count(rows[0]) == 1
    body = rows[1:]
    assert len(body) == writers * per_writer
    assert all(len(r) == 6 for r in body)
    assert {r[0] for r in body} == {f"case-{w}-{n}" for w in range(writers) for n in range(per_writer)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reprocessing_reuses_the_pseudonym_unless_asked(tmp_path: Path) -> None:
    case = tmp_path / "Case 42"
    case.mkdir()
    barcode_clip(case / "a.mp4", range(20))
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none")
    first = process_case(CaseRequest(case), options)
    again = process_case(CaseRequest(case), options)
    assert again.pseudonym == first.pseudonym and again.reused_pseudonym
    assert json.loads(again.report.read_text())["pseudonym_reused"] is True
    assert len(MappingStore(tmp_path / "archive").rows()) == 1
    fresh = process_case(CaseRequest(case), ProcessOptions(out_dir=options.out_dir, archive_dir=options.archive_dir,
                                                           detector="none", new_pseudonym=True))
    assert fresh.pseudonym != first.pseudonym
    rows = MappingStore(tmp_path / "archive").rows()
    assert [r.pseudonym for r in rows] == [first.pseudonym, fresh.pseudonym]
    assert all(r.case_id == "Case 42" and r.source_files == "a.mp4" for r in rows)


def test_cli_process_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = make_sample_case(tmp_path / "in", width=160, height=96)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["process", str(sample.folder), str(empty), "--out", str(tmp_path / "shared"),
                 "--archive", str(tmp_path / "archive"), "--segments", str(tmp_path / "in" / "segments.json"),
                 "--redact", "blur", "--json"])
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    ok, failed = result["cases"]
    assert ok["status"] == "ok" and ok["error"] is None and Path(ok["output"]).exists()
    assert ok["case_id"] == sample.planted
    assert failed["status"] == "failed" and str(empty) in failed["error"]
    report_text = Path(ok["report"]).read_text()
    for secret in (sample.planted, "Jane", "MRN4711", "VID1", "VID10"):
        assert secret not in report_text
    report = json.loads(report_text)
    assert report["redaction"]["frames"] == sample.segments.frame_count
    assert {c["name"] for c in report["checks"]} >= {"metadata_allow_list", "no_hidden_samples", "decodes_cleanly",
                                                     "redaction", "frame_count", "duration"}


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "endoshare", "process", str(tmp_path), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--archive" in proc.stderr
    assert main(["process", str(tmp_path), str(tmp_path), "--case-id", "X", "--out", str(tmp_path),
                 "--archive", str(tmp_path)]) == 2


def test_cli_inspect_shows_every_hiding_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = make_sample_case(tmp_path, width=160, height=96)
    assert main(["inspect", "--json", str(sample.clips[0])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tags"]["title"] == sample.planted
    video = info["streams"][0]
    assert video["tags"]["handler_name"] == sample.planted
    assert video["frame_rate"] == "25/1" and video["frame_count"] == 200
    assert any(sample.planted in sei["text"] for sei in info["sei_user_data"])
    assert any(t["box"] == "mvhd" and t["creation"] > 0 for t in info["mp4_times"])
    assert main(["inspect", str(tmp_path / "missing.mp4")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_rewrite_removes_temp_files_of_crashed_writers(tmp_path: Path) -> None:
    store = MappingStore(tmp_path)
    row = MappingRow("case", new_pseudonym(), "2026-01-01T00:00:00+00:00", "a.mp4", "00", "x.mp4")
    store.record(row)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".endoshare-p.{host_tag()}.{int(dead.stdout)}.{'0' * 16}.mapping.csv.tmp"
    stale.write_text("half a rewrite")
    store.record(MappingRow(*[*row.__dict__.values()][:4], "11", "x.mp4"))    # same case+pseudonym: rewrite
    assert not stale.exists()
    assert [r.output_sha256 for r in store.rows()] == ["11"]
