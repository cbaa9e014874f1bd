"""The one definition of each shared thing: exit codes, cancellation, states and kinds as enums, the typed
reasons of a join plan, and the inbox both in-process executors drain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from endoshare.cli import main
from endoshare.errors import CancelledError
from endoshare.jobs.queue import JobQueue, JobState
from endoshare.jobs.runner import Inbox, QueueEventKind, WorkerFinished, WorkerProgress, add_job
from endoshare.media.join import JoinDifference, plan_join
from endoshare.media.probe import probe
from endoshare.pipeline import Phase, ProcessOptions, ProgressEvent
from endoshare.types import ExitCode, check_cancelled
from media import barcode_clip


def test_cancelled_error_carries_the_one_message() -> None:
    assert str(CancelledError()) == "Cancelled by the user; nothing was published."
    error = CancelledError(path="/cases/P1")
    assert str(error) == "Cancelled by the user while processing /cases/P1; nothing was published."
    assert error.path == Path("/cases/P1") and isinstance(error, RuntimeError)
    assert str(CancelledError("Detection was cancelled; no result was produced.")).startswith("Detection")


def test_check_cancelled_raises_only_once_asked() -> None:
    check_cancelled(None)
    check_cancelled(lambda: False)
    with pytest.raises(CancelledError, match="nothing was published"):
        check_cancelled(lambda: True)


def test_exit_codes_are_the_documented_numbers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 130]
    # Ctrl+C anywhere in a command is 130, with a line saying that nothing partial was published.
    from endoshare.cli import sample

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sample, "make_sample_case", interrupted)
    assert main(["sample", str(tmp_path / "s")]) == ExitCode.INTERRUPTED
    assert "no partial output was published" in capsys.readouterr().err
    # A missing case folder is a failed case (1); an unknown option is a usage error (2, from argparse).
    assert main(["inspect", str(tmp_path / "missing.mp4")]) == ExitCode.SOME_FAILED
    with pytest.raises(SystemExit) as exc:
        main(["process", "--no-such-option"])
    assert exc.value.code == ExitCode.USAGE
    capsys.readouterr()


def test_join_plan_reasons_are_typed(tmp_path: Path) -> None:
    first = barcode_clip(tmp_path / "a.mp4", range(10))
    smaller = barcode_clip(tmp_path / "b.mp4", range(10), width=256, height=144)
    other_settings = barcode_clip(tmp_path / "c.mp4", range(10), options={"x264-params": "sps-id=3"})
    plan = plan_join([probe(first), probe(smaller), probe(other_settings)])
    kinds = [(m.clip, m.kind) for m in plan.mismatches]
    assert (1, JoinDifference.RESOLUTION) in kinds and (2, JoinDifference.PARAMETER_SETS) in kinds
    assert not plan.copy_compatible and plan.clips[0].differences == ()
    # The sentences stay for the report; each names its clip (1-based).
    resolution = next(m for m in plan.mismatches if m.kind is JoinDifference.RESOLUTION)
    assert str(resolution) == "clip 2: resolution 256x144 differs from 320x180"
    assert str(resolution) in plan.reasons
    # What a person sees (the case builder's warning) versus technicalities the report explains.
    assert JoinDifference.RESOLUTION.visible and JoinDifference.FRAME_RATE.visible
    assert not JoinDifference.PARAMETER_SETS.visible and not JoinDifference.HIDDEN_FRAMES.visible
    same = plan_join([probe(first), probe(first)])
    assert same.copy_compatible and same.mismatches == () and same.reasons == ()


def test_job_states_are_enum_members(tmp_path: Path) -> None:
    (tmp_path / "case").mkdir()
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none")
    with JobQueue(tmp_path / "archive") as queue:
        job = add_job(queue, tmp_path / "case", options)
        assert job.state is JobState.PENDING
        assert queue.get(job.id).state is JobState.PENDING
        counts = queue.counts()
        assert set(counts) == set(JobState) and counts[JobState.PENDING] == 1
        assert all(type(key) is JobState for key in counts)


def test_queue_event_kinds() -> None:
    assert {k for k in QueueEventKind if k.finished} == {QueueEventKind.DONE, QueueEventKind.FAILED,
                                                         QueueEventKind.CANCELLED, QueueEventKind.INTERRUPTED}
    assert QueueEventKind.INTERRUPTED.label == "interrupted"
    assert QueueEventKind.DONE == "job-done"          # the JSON progress stream keeps its values


def test_inbox_takes_everything_waiting_in_order() -> None:
    inbox = Inbox()
    assert inbox.take(0) == []
    event = ProgressEvent(Phase.RENDER, 1, 2, 0.5)
    messages = [WorkerProgress(7, 1, event) for _ in range(50)]

    def put_all() -> None:
        for message in messages:
            inbox.put(message)

    thread = threading.Thread(target=put_all)
    thread.start()
    thread.join()
    assert inbox.take(0.5) == messages
    assert inbox.take(0) == []
    # A message put while the coordinator waits ends the wait.
    timer = threading.Timer(0.05, inbox.put, args=(WorkerFinished(outcome=None),))  # type: ignore[arg-type]
    timer.start()
    assert len(inbox.take(5.0)) == 1
    timer.join()


def test_the_checker_documents_exactly_the_checks_it_runs() -> None:
    """The module docstring of endoshare.verify lists every check by name, and no check that does not exist."""
    import inspect
    import re

    from endoshare import verify

    source = inspect.getsource(verify)
    run = set(re.findall(r'CheckResult\(\s*"([a-z_]+)"', source))
    documented = set(re.findall(r"^- ``([a-z_]+)``", verify.__doc__ or "", flags=re.M))
    documented |= set(re.findall(r"^- ``[a-z_]+`` / ``([a-z_]+)``", verify.__doc__ or "", flags=re.M))
    assert run and documented == run


def test_progress_names_its_phases_in_order(tmp_path: Path) -> None:
    from endoshare.pipeline import CaseRequest, process_case

    case = tmp_path / "P7"
    case.mkdir()
    barcode_clip(case / "VID1.mp4", range(30))
    events: list[ProgressEvent] = []
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none",
                             mask_overlays=False, verify="full")     # "full" decodes (and reports) every frame
    process_case(CaseRequest(case), options, progress=events.append)
    phases = list(dict.fromkeys(event.phase for event in events))
    assert phases == [Phase.PROBE, Phase.RENDER, Phase.VERIFY, Phase.DONE]
    assert all(type(event.phase) is Phase for event in events)
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
