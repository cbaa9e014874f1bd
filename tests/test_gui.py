"""The desktop app, driven through its real widgets with pytest-qt on the offscreen Qt platform."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QModelIndex, QPoint, QSettings, Qt
from PySide6.QtGui import QColor

from endoshare.cli import gui as gui_command
from endoshare.detect.smooth import DEFAULT_MARGIN_SECONDS
from endoshare.errors import OptionsError
from endoshare.gui.app import MainWindow
from endoshare.gui.frames import FrameSource
from endoshare.gui.queue_view import (
    FAILED,
    NEEDS_REVIEW,
    PUBLISHED,
    REVIEWED,
    RUNNING,
    STATUS_COLOURS,
    WAITING,
)
from endoshare.gui.review import load_plan
from endoshare.gui.settings import GuiSettings, load_settings, save_settings, validate_settings
from endoshare.render.common import EncodeSettings, Redaction
from endoshare.sample import make_sample_case
from media import barcode_clip, decoded_frames, ffmpeg, luma_max, read_barcode

RUN_TIMEOUT_MS = 60_000
#: Video black is Y=16; a barcode frame has white cells (Y≈235) in its top row.
BLACK_LUMA_MAX = 40


@pytest.fixture(scope="module")
def barcode_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clips whose frames spell their merged-timeline index: c1 holds 0..39, c2 holds 40..79."""
    folder = tmp_path_factory.mktemp("barcode") / "case-7"
    folder.mkdir()
    barcode_clip(folder / "c1.mp4", range(0, 40), width=160, height=96)
    barcode_clip(folder / "c2.mp4", range(40, 80), width=160, height=96)
    return folder


@pytest.fixture
def make_window(qtbot, tmp_path: Path):
    windows = []

    def make(**overrides: object) -> MainWindow:
        path = tmp_path / "settings.ini"
        values = {"archive_dir": tmp_path / "archive", "shared_dir": tmp_path / "shared", "detector": "none",
                  "require_review": False, **overrides}
        for folder in ("archive_dir", "shared_dir"):
            Path(values[folder]).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        save_settings(QSettings(str(path), QSettings.Format.IniFormat), GuiSettings.of(**values))  # type: ignore[arg-type]
        window = MainWindow(path)
        # Questions are answered "yes" unless a test says otherwise (qtbot closes the window at the end).
        window.review.ask = window.queue.ask = lambda *_args: True
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.queue.cancel_all()
        window.queue.wait()
        window.queue.close_db()
        window.builder.tasks.wait()
        window.review.tasks.wait()


def build_case(qtbot, window: MainWindow, folder: Path, patient: str) -> None:
    builder = window.builder
    builder.load_folder(folder)
    qtbot.waitUntil(lambda: not builder.busy and builder.clips.count() > 0, timeout=20_000)
    builder.patient_id.setText(patient)


def run_queue(qtbot, window: MainWindow) -> None:
    qtbot.mouseClick(window.queue.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.queue.running, timeout=RUN_TIMEOUT_MS)


def entry_for(window: MainWindow, patient: str):
    return next(e for e in window.queue.entries.values() if e.case_id == patient)


REFCOUNT_SCRIPT = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Signal
app = QCoreApplication([])
class Pinger(QObject):
    ping = Signal(str, float, str)
pinger = Pinger()
received = []
pinger.ping.connect(lambda *args: received.append(args))
before = [sys.getrefcount(value) for value in (True, False, None)]
for _ in range(500):
    pinger.ping.emit("entry", 0.5, "render")
after = [sys.getrefcount(value) for value in (True, False, None)]
print(len(received), *(a - b for a, b in zip(after, before)))
"""


def test_qt_signals_keep_python_refcounts() -> None:
    """PySide6 6.12.0 on Python 3.11 loses a reference to ``True`` on every emit(): after a few thousand
    progress signals the app aborts (``bool_dealloc``).  The pinned PySide6 range must not have that bug.
    Measured in a fresh interpreter, where no other thread moves these counts."""
    done = subprocess.run([sys.executable, "-c", REFCOUNT_SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["500", "0", "0", "0"]


def test_gui_command_parses_its_settings_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    gui_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gui", "--settings", str(tmp_path / "s.ini")])
    assert args.func is gui_command.run and args.settings == tmp_path / "s.ini"


def test_frame_source_is_frame_accurate_in_any_order(barcode_case: Path) -> None:
    plan = load_plan(barcode_case, "case-7")
    order = list(range(plan.total_frames))
    random.Random(3).shuffle(order)
    with FrameSource(plan) as source:
        assert [read_barcode(source.frame(i)) for i in order] == order


def test_build_reordered_case_and_run_it_to_done(qtbot, make_window, barcode_case: Path, tmp_path: Path) -> None:
    window = make_window()
    builder = window.builder
    build_case(qtbot, window, barcode_case, "PATIENT-42")
    texts = [builder.clips.item(i).text() for i in range(builder.clips.count())]
    assert texts == ["c1.mp4 — 0:01.60 — 160×96 @ 25 fps", "c2.mp4 — 0:01.60 — 160×96 @ 25 fps"]
    qtbot.waitUntil(lambda: builder.preview.pixmap() is not None and not builder.preview.pixmap().isNull())

    # A clip of another size brings the mismatch warning; removing it takes the warning away.
    odd = barcode_clip(tmp_path / "odd.mp4", range(5), width=128, height=72)
    builder.add_clips([odd])
    qtbot.waitUntil(lambda: not builder.busy)
    assert builder.warning.isVisible() and "resolution 128x72" in builder.warning.text()
    builder.clips.setCurrentRow(2)
    qtbot.mouseClick(builder.remove_button, Qt.MouseButton.LeftButton)
    assert not builder.warning.isVisible()

    # The buttons move the selected clip; a drop moves the model's row, as the list's drag and drop does.
    builder.clips.setCurrentRow(0)
    qtbot.mouseClick(builder.down_button, Qt.MouseButton.LeftButton)
    assert [p.name for p in builder.clip_paths()] == ["c2.mp4", "c1.mp4"]
    qtbot.mouseClick(builder.up_button, Qt.MouseButton.LeftButton)
    assert [p.name for p in builder.clip_paths()] == ["c1.mp4", "c2.mp4"]
    # Recorded the other way round: c2 goes first.
    assert builder.clips.model().moveRow(QModelIndex(), 1, QModelIndex(), 0)
    assert [p.name for p in builder.clip_paths()] == ["c2.mp4", "c1.mp4"]
    qtbot.mouseClick(builder.confirm_button, Qt.MouseButton.LeftButton)
    entry = entry_for(window, "PATIENT-42")
    assert entry.status == WAITING and window.tabs.currentWidget() is window.queue

    # The same patient cannot be queued twice while the first is still to run.
    build_case(qtbot, window, barcode_case, "PATIENT-42")
    assert not builder.confirm() and "already waiting" in builder.warning.text()
    assert len(window.queue.entries) == 1
    builder.clear()

    seen: list[float] = []
    summaries: list[str] = []

    def progress(_id: str) -> None:
        now = entry_for(window, "PATIENT-42")
        if now.status == RUNNING and now.live_fraction is not None:
            seen.append(now.live_fraction)
            summaries.append(window.queue.summary.text())

    window.queue.entry_changed.connect(progress)
    run_queue(qtbot, window)

    entry = entry_for(window, "PATIENT-42")
    assert entry.status == PUBLISHED, entry.job.error
    row = window.queue.row_of(entry.entry_id)
    assert window.queue.table.item(row, 1).text() == PUBLISHED
    assert window.queue.table.item(row, 1).background().color().name() == STATUS_COLOURS[PUBLISHED]
    assert window.queue.table.cellWidget(row, 2).value() == 100
    assert any(0 < f < 1 for f in seen) and seen == sorted(seen)      # real, forward-only progress
    assert any(re.search(r"about \d+ min \d\d s left", text) for text in summaries), summaries   # an ETA
    output = entry.output
    assert window.queue.table.item(row, 3).text() == str(output)       # the full path
    clips = window.queue.table.item(row, 4).text()
    assert clips == "c2.mp4, c1.mp4"                                    # in the order the pipeline reads them
    assert output.parent == tmp_path / "shared" and output.exists()
    assert "PATIENT-42" not in output.name
    frames = decoded_frames(output)
    assert [read_barcode(f) for f in frames] == [*range(40, 80), *range(0, 40)]
    audit = [json.loads(line) for line in (tmp_path / "archive" / "audit.jsonl").read_text().splitlines()]
    assert [r["event"] for r in audit] == ["added", "started", "done"]      # the CLI's audit lines


def spans_of(review) -> list[tuple[int, int]]:
    return [(s.start_frame, s.end_frame) for s in review.spans]


def boxes_of(review) -> tuple[int, int]:
    return review.start_box.value(), review.end_box.value()


def open_review_of(qtbot, window: MainWindow, patient: str) -> None:
    window.queue.select(entry_for(window, patient).entry_id)
    with qtbot.waitSignal(window.review.loaded, timeout=20_000):
        qtbot.mouseClick(window.queue.review_button, Qt.MouseButton.LeftButton)


def test_review_edit_span_rerender_then_publish(qtbot, make_window, barcode_case: Path, tmp_path: Path) -> None:
    window = make_window(require_review=True)
    build_case(qtbot, window, barcode_case, "P-REVIEW")
    qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    run_queue(qtbot, window)
    entry = entry_for(window, "P-REVIEW")
    assert entry.status == NEEDS_REVIEW, entry.job.error
    assert window.queue.table.item(window.queue.row_of(entry.entry_id), 1).text() == "needs review"
    assert not list((tmp_path / "shared").glob("*.mp4"))             # held back until reviewed

    review = window.review
    open_review_of(qtbot, window, "P-REVIEW")
    assert window.tabs.currentWidget() is review and len(review.spans) == 0
    assert not review.picture.pixmap().isNull()                       # the report's timeline picture
    qtbot.waitUntil(lambda: len(review.timeline.thumbnails) > 0, timeout=20_000)

    review.show_frame(10)
    assert review.current == 10 and "shown in the output" in review.frame_state.text()
    assert "00:00:10" in review.frame_state.text()                    # mm:ss:ff
    qtbot.mouseClick(review.add_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(10, 35)] and boxes_of(review) == (10, 34)
    # Move both edges frame-accurately: the span now hides 38..44, across the clip boundary.
    review.start_box.setValue(38)
    review.end_box.setValue(44)
    qtbot.mouseClick(review.apply_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(38, 45)]
    review.show_frame(44)
    assert "HIDDEN" in review.frame_state.text()
    qtbot.mouseClick(review.reviewed_button, Qt.MouseButton.LeftButton)
    assert entry_for(window, "P-REVIEW").status == NEEDS_REVIEW       # edited spans need a re-render first

    with qtbot.waitSignal(review.loaded, timeout=RUN_TIMEOUT_MS):
        qtbot.mouseClick(review.rerender_button, Qt.MouseButton.LeftButton)
    entry = entry_for(window, "P-REVIEW")
    assert entry.status == NEEDS_REVIEW and entry.job.options.segments_file is not None
    assert len(window.queue.entries) == 1                              # the re-render replaced the first run
    assert spans_of(review) == [(38, 45)] and not review.edited        # read back from the new report
    qtbot.mouseClick(review.reviewed_button, Qt.MouseButton.LeftButton)
    entry = entry_for(window, "P-REVIEW")
    assert entry.status == REVIEWED and entry.reviewed

    output = entry.output
    assert output.parent == tmp_path / "shared" and output.exists()
    report_path = tmp_path / "shared" / entry.job.report.name
    frames = decoded_frames(output)
    assert len(frames) == 80
    assert all(luma_max(frames[i]) <= BLACK_LUMA_MAX for i in range(38, 45))
    assert read_barcode(frames[37]) == 37 and read_barcode(frames[45]) == 45
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["redaction"]["spans"] == [{"start_frame": 38, "end_frame": 45}]
    assert report["redaction"]["source"] == "segments file"
    assert report["review"]["spans"] == [{"start_frame": 38, "end_frame": 45}] and report["review"]["reviewed_utc"]
    audit = [json.loads(line) for line in (tmp_path / "archive" / "audit.jsonl").read_text().splitlines()]
    reviewed = [r for r in audit if r["event"] == "reviewed"]
    assert len(reviewed) == 1 and reviewed[0]["reviewer"] and reviewed[0]["spans"] == report["review"]["spans"]
    assert reviewed[0]["published"] == str(output)
    assert (tmp_path / "shared" / f"{entry.job.pseudonym}.timeline.png").is_file()


@pytest.fixture
def reviewed_window(qtbot, make_window, barcode_case: Path, tmp_path: Path):
    """A window with two held cases, the first open in the review with spans 10..19 and 50..59."""
    window = make_window(require_review=True, workers=2)
    segments = tmp_path / "spans.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": 10, "end_frame": 20},
                                                 {"start_frame": 50, "end_frame": 60}]}))
    options = replace(window.settings().process_options(), segments_file=segments)
    from endoshare.jobs.queue import JobQueue
    from endoshare.jobs.runner import add_job
    with JobQueue(tmp_path / "archive") as queue:
        add_job(queue, barcode_case, options, "CASE-A")
        add_job(queue, barcode_case, window.settings().process_options(), "CASE-B")
    window.queue.refresh()
    run_queue(qtbot, window)
    assert {e.case_id: e.status for e in window.queue.entries.values()} == {"CASE-A": NEEDS_REVIEW,
                                                                             "CASE-B": NEEDS_REVIEW}
    open_review_of(qtbot, window, "CASE-A")
    assert spans_of(window.review) == [(10, 20), (50, 60)]
    return window


def test_edge_buttons_update_the_boxes_so_apply_never_undoes(qtbot, reviewed_window) -> None:
    review = reviewed_window.review
    review.span_table.selectRow(1)
    assert review.current == 50 and boxes_of(review) == (50, 59)     # clicking a span jumps to it
    review.show_frame(55)
    qtbot.mouseClick(review.start_here_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(10, 20), (55, 60)] and boxes_of(review) == (55, 59)
    qtbot.mouseClick(review.apply_button, Qt.MouseButton.LeftButton)       # the bug: this used to undo the edit
    assert spans_of(review) == [(10, 20), (55, 60)]
    review.show_frame(57)
    qtbot.mouseClick(review.end_here_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(10, 20), (55, 58)] and boxes_of(review) == (55, 57)
    qtbot.mouseClick(review.apply_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(10, 20), (55, 58)]


def test_add_selects_the_new_span_so_apply_keeps_it(qtbot, reviewed_window) -> None:
    review = reviewed_window.review
    review.span_table.selectRow(0)
    review.show_frame(30)
    qtbot.mouseClick(review.add_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(10, 20), (30, 55)][:1] + [(30, 60)]       # one second, merged with 50..59
    assert review.selected_span().start_frame == 30 and boxes_of(review) == (30, 59)
    qtbot.mouseClick(review.apply_button, Qt.MouseButton.LeftButton)       # the bug: Apply deleted the new span
    assert spans_of(review) == [(10, 20), (30, 60)]


def test_every_edit_undoes_and_redoes_and_removal_asks(qtbot, reviewed_window) -> None:
    review = reviewed_window.review
    original = spans_of(review)
    answers = iter([False, True])
    review.ask = lambda *_args: next(answers)
    review.span_table.selectRow(0)
    qtbot.mouseClick(review.remove_button, Qt.MouseButton.LeftButton)     # "No"
    assert spans_of(review) == original
    qtbot.mouseClick(review.remove_button, Qt.MouseButton.LeftButton)     # "Yes"
    assert spans_of(review) == [(50, 60)] and review.selected_span() is None and not review.apply_button.isEnabled()
    review.show_frame(70)
    qtbot.mouseClick(review.add_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(50, 60), (70, 80)]
    review.setFocus()
    qtbot.keyClick(review, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert spans_of(review) == [(50, 60)]
    qtbot.keyClick(review, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert spans_of(review) == original and review.selected_span() == review.spans.segments[0]
    assert boxes_of(review) == (10, 19)                                   # undo restores the selection too
    qtbot.keyClick(review, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert spans_of(review) == [(50, 60)]
    qtbot.mouseClick(review.undo_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == original and not review.edited


def test_unsaved_edits_are_never_dropped_silently(qtbot, reviewed_window) -> None:
    window = reviewed_window
    review = window.review
    review.span_table.selectRow(0)
    review.ask = lambda *_args: True
    qtbot.mouseClick(review.remove_button, Qt.MouseButton.LeftButton)
    assert review.edited
    asked: list[str] = []
    review.ask = lambda title, _text: asked.append(title) or False        # "keep my edits"
    window.open_review(entry_for(window, "CASE-B").entry_id)
    assert asked and review.case.case_id == "CASE-A" and spans_of(review) == [(50, 60)]
    window.close()
    assert window.isVisible() and len(asked) == 2                         # closing asked too, and was refused
    review.ask = lambda *_args: True                                      # "discard"
    with qtbot.waitSignal(review.loaded, timeout=20_000):
        window.open_review(entry_for(window, "CASE-B").entry_id)
    assert review.case.case_id == "CASE-B" and spans_of(review) == [] and not review.undo_stack.canUndo()


def test_another_case_starts_with_nothing_selected(qtbot, reviewed_window) -> None:
    window = reviewed_window
    review = window.review
    review.span_table.selectRow(1)
    assert boxes_of(review) == (50, 59)
    open_review_of(qtbot, window, "CASE-B")
    assert review.selected_span() is None and not review.apply_button.isEnabled()
    review.show_frame(5)
    qtbot.mouseClick(review.add_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(review.apply_button, Qt.MouseButton.LeftButton)      # the bug: applied CASE-A's numbers
    assert spans_of(review) == [(5, 30)]


def test_removing_the_open_case_closes_its_review(qtbot, reviewed_window) -> None:
    window = reviewed_window
    window.tabs.setCurrentWidget(window.queue)
    window.queue.ask = lambda *_args: True
    window.queue.select(entry_for(window, "CASE-A").entry_id)
    qtbot.mouseClick(window.queue.remove_button, Qt.MouseButton.LeftButton)
    assert "CASE-A" not in {e.case_id for e in window.queue.entries.values()}
    review = window.review
    assert review.case is None and "removed" in review.state.text()
    assert not review.reviewed_button.isEnabled() and not review.rerender_button.isEnabled()
    # Marking a vanished case reviewed records nothing and says so (it used to raise KeyError).
    assert not window.queue.mark_reviewed("999", review.spans)


def test_navigation_keys_and_timeline(qtbot, reviewed_window) -> None:
    review = reviewed_window.review
    review.setFocus()
    review.show_frame(0)
    qtbot.keyClick(review, Qt.Key.Key_Right)
    assert review.current == 1
    qtbot.keyClick(review, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert review.current == 26                                           # one second at 25 fps
    qtbot.keyClick(review, Qt.Key.Key_Left)
    assert review.current == 25
    assert reviewed_window.tabs.currentWidget() is review                 # arrows do not switch tabs
    qtbot.keyClick(review, Qt.Key.Key_N)
    assert review.current == 50 and review.selected_span().start_frame == 50
    qtbot.keyClick(review, Qt.Key.Key_P)
    assert review.current == 10 and review.selected_span().start_frame == 10
    # A click on the timeline inside a span moves the playhead there and selects the span.
    bar = review.timeline
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=QPoint(bar.x_of(55) + 1, 10))
    assert review.selected_span().start_frame == 50 and 54 <= review.current <= 56
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=QPoint(bar.x_of(35), 10))
    assert review.selected_span() is None
    width = bar.width()
    qtbot.mouseClick(review.zoom_in_button, Qt.MouseButton.LeftButton)
    assert bar.width() == 2 * width
    # The output preview shows hidden frames black, as rendered; the source view shows the picture.
    review.show_frame(15)
    review.output_preview.setChecked(True)
    image = review.video._pixmap.toImage()
    assert QColor(image.pixel(image.width() // 2, image.height() // 2)).value() < BLACK_LUMA_MAX
    review.output_preview.setChecked(False)
    image = review.video._pixmap.toImage()
    assert max(QColor(image.pixel(x, 2)).value() for x in range(image.width())) > 200   # barcode cells


def test_unreadable_file_shows_error_and_queue_goes_on(qtbot, make_window, barcode_case: Path,
                                                       tmp_path: Path) -> None:
    window = make_window(workers=2)
    broken = tmp_path / "broken-case"
    broken.mkdir()
    (broken / "clip.mp4").write_bytes(b"this is not a video" * 100)

    # The builder refuses it and says why...
    build_case(qtbot, window, broken, "BROKEN")
    assert "⚠" in window.builder.clips.item(0).text()
    assert not window.builder.confirm_button.isEnabled() and "clip.mp4" in window.builder.warning.text()
    assert "Errno" not in window.builder.warning.text()                # no numeric codes for people
    # ...and a case that breaks after it was queued fails alone.
    window.builder.clear()
    window.queue.add_case("BROKEN", broken, ("clip.mp4",))
    for patient in ("GOOD", "GOOD-2"):
        build_case(qtbot, window, barcode_case, patient)
        qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    run_queue(qtbot, window)

    bad, good, other = entry_for(window, "BROKEN"), entry_for(window, "GOOD"), entry_for(window, "GOOD-2")
    assert bad.status == FAILED and "clip.mp4" in bad.job.error
    assert window.queue.table.item(window.queue.row_of(bad.entry_id), 1).text().startswith("failed: ")
    dialog = window.queue.error_dialog
    assert dialog is not None and dialog.isVisible() and "clip.mp4" in dialog.text() and "Errno" not in dialog.text()
    assert good.status == PUBLISHED and good.output.exists()
    assert other.status == PUBLISHED and other.output.exists() and other.job.pseudonym != good.job.pseudonym
    # A failed case can be retried: it waits again.
    window.queue.select(bad.entry_id)
    assert window.queue.retry_button.isEnabled()
    qtbot.mouseClick(window.queue.retry_button, Qt.MouseButton.LeftButton)
    assert entry_for(window, "BROKEN").status == WAITING


def test_stop_asks_first_and_cancels(qtbot, make_window, tmp_path: Path, monkeypatch) -> None:
    sample = make_sample_case(tmp_path / "sample", width=160, height=96)
    window = make_window(detector="builtin")
    build_case(qtbot, window, sample.folder, "STOP-ME")
    qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    answers = iter([False, True])
    window.queue.ask = lambda *_args: next(answers)
    asked: list[bool] = []

    def on_change(_id: str) -> None:
        if entry_for(window, "STOP-ME").status == RUNNING and not asked:
            asked.append(window.queue.stop())                 # answered "No": it keeps running
            asked.append(window.queue.running)
            asked.append(window.queue.stop())                 # answered "Yes": stopped

    window.queue.entry_changed.connect(on_change)
    run_queue(qtbot, window)
    assert asked == [False, True, True]
    entry = entry_for(window, "STOP-ME")
    assert entry.status in ("interrupted", WAITING) and entry.job.state == "pending"       # runs again on Start
    assert not list((tmp_path / "shared").glob("*.mp4")) and not list((tmp_path / "shared").glob(".*partial"))


def test_builtin_detector_spans_show_in_review(qtbot, make_window, tmp_path: Path) -> None:
    sample = make_sample_case(tmp_path / "sample", width=160, height=96)
    window = make_window(detector="builtin")
    build_case(qtbot, window, sample.folder, "DETECT")
    qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    run_queue(qtbot, window)
    entry = entry_for(window, "DETECT")
    assert entry.status == PUBLISHED, entry.job.error
    detections = json.loads((tmp_path / "archive" / "detections" / f"{entry.job.pseudonym}.json")
                            .read_text(encoding="utf-8"))
    window.queue.select(entry.entry_id)
    with qtbot.waitSignal(window.review.loaded, timeout=20_000):
        qtbot.mouseClick(window.queue.review_button, Qt.MouseButton.LeftButton)
    shown = window.review.spans.to_json()
    assert shown and shown == detections["segments"]
    assert window.review.span_table.rowCount() == len(shown)
    first = shown[0]
    window.review.show_frame(first["start_frame"])
    assert "HIDDEN" in window.review.frame_state.text()


def test_settings_are_validated_then_persisted(qtbot, make_window, tmp_path: Path) -> None:
    window = make_window()
    dialog = window.settings_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    broken_weights = tmp_path / "oobnet_weights.h5"
    broken_weights.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    dialog.archive.edit.setText(str(not_a_folder))
    dialog.detector.setCurrentIndex(dialog.detector.findData("oobnet"))
    dialog.weights.edit.setText(str(broken_weights))
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.problems.isVisible()
    assert "is a file, not a folder" in dialog.problems.text() and str(broken_weights) in dialog.problems.text()
    assert "Errno" not in dialog.problems.text() and "HDF5" not in dialog.problems.text()     # no jargon
    assert load_settings(window.store).archive_dir == tmp_path / "archive"     # nothing saved

    dialog.archive.edit.setText(str(tmp_path / "shared"))
    dialog.detector.setCurrentIndex(dialog.detector.findData("builtin"))
    dialog.weights.edit.clear()
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert "must not be the shared folder" in dialog.problems.text()

    dialog.archive.edit.setText(str(tmp_path / "new-archive"))
    dialog.mode.setCurrentIndex(dialog.mode.findData("advanced"))
    dialog.crf.setValue(30)
    dialog.workers.setValue(2)
    dialog.redaction.setCurrentIndex(dialog.redaction.findData("blur"))
    dialog.require_review.setChecked(True)
    assert dialog.margin.toolTip() and dialog.keep_audio.toolTip()
    dialog.margin.setValue(1.5)
    dialog.keep_audio.setChecked(True)
    assert dialog.mask_overlays.isChecked() and dialog.keep_device_settings.isEnabled()
    dialog.mask_overlays.setChecked(False)
    assert not dialog.keep_device_settings.isEnabled()
    dialog.mask_overlays.setChecked(True)
    dialog.keep_device_settings.setChecked(True)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert store.value("processing/margin_seconds") == '"3/2"'             # exact, not a float
    saved = load_settings(store)
    assert saved == GuiSettings.of(tmp_path / "new-archive", tmp_path / "shared", mode="advanced",
                                   redaction=Redaction.BLUR, detector="builtin", workers=2,
                                   encode=EncodeSettings(crf=30), require_review=True, keep_audio=True,
                                   margin_seconds=Fraction(3, 2), keep_device_settings=True)
    window.reload_settings()
    options = window.settings().process_options()
    assert options.out_dir == tmp_path / "new-archive" / "awaiting-review"
    assert options.keep_audio and options.margin_seconds == Fraction(3, 2)
    assert options.mask_overlays and options.keep_device_settings

    # A margin the box cannot show exactly survives the dialog untouched; a changed one is exact tenths.
    save_settings(window.store, saved.with_choices(margin_seconds=Fraction(1, 3)))
    dialog = window.settings_dialog()
    qtbot.addWidget(dialog)
    assert dialog.chosen_settings().options.margin_seconds == Fraction(1, 3)
    dialog.margin.setValue(0.3)
    assert dialog.chosen_settings().options.margin_seconds == Fraction(3, 10)


def test_unusable_margins_are_refused(tmp_path: Path) -> None:
    good = GuiSettings.of(tmp_path / "archive", tmp_path / "shared", detector="none")
    assert validate_settings(good, create_folders=True) == ()
    # The settings hold a ProcessOptions: an unusable margin cannot even be held.
    with pytest.raises(OptionsError, match="must not be negative"):
        good.with_choices(margin_seconds=Fraction(-1, 10))
    with pytest.raises(OptionsError, match="number of seconds"):
        good.with_choices(margin_seconds="soon")
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    for stored in ('"-1"', '"abc"', "abc", '"1/0"', '"1e9"', "0.5", "true"):
        store.setValue("processing/margin_seconds", stored)
        # A damaged value falls back to the default.
        assert load_settings(store).options.margin_seconds == DEFAULT_MARGIN_SECONDS, stored
    store.setValue("processing/margin_seconds", '"0.25"')
    assert load_settings(store).options.margin_seconds == Fraction(1, 4)
    # The same for every other choice: a damaged value falls back to its default, the others are kept.
    store.setValue("processing/mask_overlays", '"false"')
    store.setValue("processing/mode", '"advanced"')
    loaded = load_settings(store).options
    assert loaded.mask_overlays is True and loaded.mode == "advanced"


def test_settings_of_the_earlier_layout_are_carried_over(tmp_path: Path) -> None:
    """A settings file written before the choices were one key per option keeps its choices (it used to
    fall back to the defaults once); a damaged one still falls back, and today's keys win."""
    store = QSettings(str(tmp_path / "old.ini"), QSettings.Format.IniFormat)
    earlier = {"folders/archive": str(tmp_path / "archive"), "folders/shared": str(tmp_path / "shared"),
               "render/mode": "advanced", "render/redaction": "blur", "render/codec": "hevc", "render/crf": "30",
               "render/preset": "slow", "render/height": "", "detector/name": "none", "detector/weights": "",
               "detector/margin_seconds": "3/10", "render/keep_audio": "true", "render/mask_overlays": "false",
               "render/keep_device_settings": "true", "run/workers": "2", "review/required": "false"}
    for key, value in earlier.items():
        store.setValue(key, value)
    loaded = load_settings(store)
    options = loaded.options
    assert (options.mode, options.redaction.value, options.detector) == ("advanced", "blur", "none")
    assert (options.encode.codec, options.encode.crf, options.encode.preset, options.encode.height) == (
        "hevc", 30, "slow", None)
    assert options.margin_seconds == Fraction(3, 10) and options.weights is None
    assert options.keep_audio and not options.mask_overlays and options.keep_device_settings
    assert loaded.workers == 2 and not loaded.require_review
    store.setValue("render/mask_overlays", "maybe")        # damaged: the safe default (masking) again
    store.setValue("render/crf", "99")                     # out of range: the codec's default
    assert load_settings(store).options.mask_overlays is True
    assert load_settings(store).options.encode.crf is None
    save_settings(store, loaded)                            # saved in today's layout, which wins from then on
    store.setValue("render/mode", "fast")
    assert load_settings(store).options == options


def test_keep_audio_reaches_the_output(qtbot, make_window, tmp_path: Path) -> None:
    folder = tmp_path / "audio-case"
    folder.mkdir()
    video = barcode_clip(tmp_path / "video.mp4", range(50), width=160, height=96)
    ffmpeg("-i", video, "-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100",
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", folder / "c1.mp4")
    window = make_window(keep_audio=True)
    build_case(qtbot, window, folder, "AUDIO")
    qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    run_queue(qtbot, window)
    entry = entry_for(window, "AUDIO")
    assert entry.status == PUBLISHED, entry.job.error
    with av.open(str(entry.output)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    report = json.loads(entry.job.report.read_text(encoding="utf-8"))
    assert report["settings"]["keep_audio"] is True
    assert [c["passed"] for c in report["checks"] if c["name"] == "audio"] == [True]


@pytest.mark.slow
def test_margin_setting_widens_detected_spans(qtbot, make_window, tmp_path: Path) -> None:
    sample = make_sample_case(tmp_path / "sample", width=160, height=96)
    window = make_window(detector="builtin", margin_seconds=Fraction(0))
    reports = {}
    for patient, margin in (("NARROW", 0.0), ("WIDE", 1.5)):
        dialog = window.settings_dialog()
        qtbot.addWidget(dialog)
        dialog.margin.setValue(margin)
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible(), dialog.problems.text()
        window.reload_settings()
        build_case(qtbot, window, sample.folder, patient)
        qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
        run_queue(qtbot, window)
        entry = entry_for(window, patient)
        assert entry.status == PUBLISHED, entry.job.error
        reports[patient] = json.loads(entry.job.report.read_text(encoding="utf-8"))
    assert reports["NARROW"]["settings"]["margin_seconds"] == "0/1"
    assert reports["WIDE"]["settings"]["margin_seconds"] == "3/2"
    narrow = [(s["start_frame"], s["end_frame"]) for s in reports["NARROW"]["redaction"]["spans"]]
    wide = [(s["start_frame"], s["end_frame"]) for s in reports["WIDE"]["redaction"]["spans"]]
    total = reports["WIDE"]["merged_timeline"]["frames"]
    assert narrow
    # 1.5 s at 25 fps is 37.5 frames, rounded up: every narrow span grows by 38 frames on each side.
    for start, end in narrow:
        assert any(a <= max(0, start - 38) and min(total, end + 38) <= b for a, b in wide), (start, end, wide)
    assert reports["WIDE"]["redaction"]["frames"] > reports["NARROW"]["redaction"]["frames"]


CRASH_SCRIPT = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path
from PySide6.QtWidgets import QApplication
from endoshare.gui.app import MainWindow
app = QApplication([])
window = MainWindow(Path(sys.argv[1]))
window.queue.add_case("SLOW", Path(sys.argv[2]), ())
assert window.queue.start()
app.exec()
"""


@pytest.mark.slow
def test_killed_app_reopens_with_queue_held_cases_and_reviews(qtbot, make_window, barcode_case: Path,
                                                              tmp_path: Path) -> None:
    """The app is killed (SIGKILL) while a case runs; reopened, it shows the held and reviewed cases as
    they were and the interrupted case, which runs to the end on Start."""
    window = make_window(require_review=True, detector="builtin", mode="advanced")
    for patient in ("HELD", "REVIEWED"):
        build_case(qtbot, window, barcode_case, patient)
        qtbot.mouseClick(window.builder.confirm_button, Qt.MouseButton.LeftButton)
    run_queue(qtbot, window)
    open_review_of(qtbot, window, "REVIEWED")
    qtbot.mouseClick(window.review.reviewed_button, Qt.MouseButton.LeftButton)
    assert entry_for(window, "REVIEWED").status == REVIEWED
    window.queue.close_db()
    window.hide()

    sample = make_sample_case(tmp_path / "sample", width=320, height=180)
    child = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "settings.ini"), str(sample.folder)],
                             env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    from endoshare.jobs.queue import JobQueue
    try:
        with JobQueue(tmp_path / "archive") as queue:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                slow = [j for j in queue.jobs() if j.case_id == "SLOW"]
                if slow and slow[0].state == "running" and slow[0].worker not in (None, "starting"):
                    break
                assert child.poll() is None, "the app ended by itself"
                time.sleep(0.05)
            else:
                pytest.fail("the case never started")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)

    reopened = make_window(require_review=True, detector="builtin", mode="advanced")
    statuses = {e.case_id: e.status for e in reopened.queue.entries.values()}
    assert statuses == {"HELD": NEEDS_REVIEW, "REVIEWED": REVIEWED, "SLOW": "interrupted"}
    assert "press Start" in reopened.queue.table.item(reopened.queue.row_of(entry_for(reopened, "SLOW").entry_id),
                                                      1).text()
    reviewed = entry_for(reopened, "REVIEWED")
    assert reviewed.review.reviewer and reviewed.output.parent == tmp_path / "shared"
    open_review_of(qtbot, reopened, "HELD")                       # the held case can still be reviewed
    run_queue(qtbot, reopened)
    assert entry_for(reopened, "SLOW").status == NEEDS_REVIEW, entry_for(reopened, "SLOW").job.error
    events = [json.loads(line)["event"] for line in (tmp_path / "archive" / "audit.jsonl").read_text().splitlines()]
    assert "interrupted" in events and events.count("reviewed") == 1


LDD_OUTPUT = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f2)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f3)
\tlibweird.so.9 => not found
"""


def test_gui_command_names_the_missing_system_libraries(monkeypatch, capsys, tmp_path: Path) -> None:
    from endoshare.cli import gui as gui_cli
    from endoshare.types import ExitCode

    assert gui_cli.missing_from_ldd(LDD_OUTPUT) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird.so.9"]
    message = gui_cli.missing_libraries_message(gui_cli.missing_from_ldd(LDD_OUTPUT))
    assert "apt-get install libxcb-icccm4 libxcb-keysyms1" in message
    assert "dnf install xcb-util-keysyms xcb-util-wm" in message and "libweird.so.9" in message
    assert "xcb-cursor" not in message                          # Qt's own guess, wrong here
    # The check runs ldd on Qt's real xcb plugin; with the libraries reported missing the app does not start.
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, LDD_OUTPUT, "")

    monkeypatch.setattr(gui_cli.subprocess, "run", fake_run)
    assert gui_cli.run(argparse.Namespace(settings=tmp_path / "s.ini")) == ExitCode.USAGE
    assert calls and calls[0][1].endswith("libqxcb.so")
    assert "libxcb-keysyms.so.1" in capsys.readouterr().err


def test_relative_and_missing_folders_are_refused_not_recreated(qtbot, make_window, tmp_path: Path) -> None:
    good = GuiSettings.of(tmp_path / "archive", tmp_path / "shared", detector="none")
    (tmp_path / "archive").mkdir()
    (tmp_path / "shared").mkdir()
    assert validate_settings(good) == ()
    relative = validate_settings(replace(good, shared_dir=Path("shared")))
    assert len(relative) == 1 and "full path" in relative[0]
    (tmp_path / "shared").rmdir()                                 # deleted (or its disk unplugged)
    missing = validate_settings(good)
    assert len(missing) == 1 and "does not exist" in missing[0]
    assert not (tmp_path / "shared").exists()                     # and not silently re-created
    assert validate_settings(good, create_folders=True) == () and (tmp_path / "shared").is_dir()
    # The window refuses to queue a case while the shared folder is gone.
    window = make_window()
    (tmp_path / "shared").rmdir()
    assert window.queue.add_case("X", tmp_path, ()) is None
    assert "does not exist" in window.queue.error_dialog.text() and not (tmp_path / "shared").exists()


def test_first_start_opens_the_settings_with_an_explanation(qtbot, tmp_path: Path) -> None:
    window = MainWindow(tmp_path / "fresh.ini")
    qtbot.addWidget(window)
    from endoshare.gui.settings import first_run
    assert first_run(window.store)
    dialog = window.first_run_settings()
    qtbot.addWidget(dialog)
    assert dialog.isVisible() and "archive folder" in dialog.intro.text()
    dialog.archive.edit.setText(str(tmp_path / "a"))
    dialog.shared.edit.setText(str(tmp_path / "s"))
    dialog.detector.setCurrentIndex(dialog.detector.findData("none"))
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible(), dialog.problems.text()
    assert not first_run(window.store) and window.settings().archive_dir == tmp_path / "a"


def test_builder_warns_about_copies_and_clips_from_elsewhere(qtbot, make_window, barcode_case: Path,
                                                             tmp_path: Path) -> None:
    window = make_window()
    builder = window.builder
    builder.load_folder(barcode_case)
    qtbot.waitUntil(lambda: not builder.busy and builder.clips.count() == 2, timeout=20_000)
    assert builder.patient_id.text() == ""                 # never guessed from the folder name
    assert not builder.warning.isVisible()
    other = tmp_path / "other-patient"
    other.mkdir()
    stranger = barcode_clip(other / "x.mp4", range(100, 110), width=160, height=96)
    copy = other / "copy-of-c1.mp4"
    copy.write_bytes((barcode_case / "c1.mp4").read_bytes())
    builder.add_clips([stranger, copy])
    qtbot.waitUntil(lambda: not builder.busy, timeout=20_000)
    text = builder.warning.text()
    assert builder.warning.isVisible()
    assert "copy-of-c1.mp4 is the same recording as c1.mp4" in text
    assert str(stranger) in text and "belong to this patient" in text
    assert builder.clips.height() > 100                    # the message does not squeeze the clip list
    # The preview follows the window's size.
    builder.clips.setCurrentRow(0)
    qtbot.waitUntil(lambda: builder.preview.pixmap() is not None and not builder.preview.pixmap().isNull())
    window.resize(900, 600)
    qtbot.waitUntil(lambda: builder.preview.pixmap().width() <= builder.preview.width())
    small = builder.preview.pixmap().width()
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: builder.preview.pixmap().width() > small)


def test_edits_survive_a_crash_of_the_app(qtbot, reviewed_window, make_window, tmp_path: Path) -> None:
    review = reviewed_window.review
    review.span_table.selectRow(0)
    qtbot.mouseClick(review.remove_button, Qt.MouseButton.LeftButton)
    assert spans_of(review) == [(50, 60)]
    drafts = list((tmp_path / "archive" / "review-drafts").iterdir())
    assert len(drafts) == 1 and stat.S_IMODE(os.stat(drafts[0]).st_mode) == 0o600      # private
    # A second window on the same archive stands for the app started again after a crash.
    again = make_window(require_review=True, workers=2)
    open_review_of(qtbot, again, "CASE-A")
    assert spans_of(again.review) == [(50, 60)] and again.review.edited
    assert "restored" in again.review.state.text()
    qtbot.mouseClick(again.review.undo_button, Qt.MouseButton.LeftButton)   # drop them
    assert spans_of(again.review) == [(10, 20), (50, 60)] and not again.review.edited
    assert not list((tmp_path / "archive" / "review-drafts").iterdir())


def drag(qtbot, widget, start: QPoint, end: QPoint) -> None:
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(widget, end)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=end)


def luma(frame: av.VideoFrame, box) -> float:
    return float(frame.to_ndarray(format="yuv420p")[box.y0:box.y1, box.x0:box.x1].mean())


def test_review_regions_added_moved_removed_reach_the_job(qtbot, reviewed_window, make_window,
                                                           tmp_path: Path) -> None:
    from endoshare.overlay.regions import OverlaySet
    from endoshare.overlay.text import Box

    window, review = reviewed_window, reviewed_window.review
    video = review.video
    found = review.overlays
    assert video.picture_size == (160, 96) and review.saved_overlays == found
    review.show_frame(30)
    # Drag a rectangle on the picture: a region masked in every frame (when in doubt, mask).
    target = video.widget_rect(Box(20, 30, 80, 60))
    drag(qtbot, video, target.topLeft(), target.bottomRight())
    added = [r for r in review.overlays.regions if r not in found.regions]
    assert len(added) == 1 and added[0].kind == "manual" and added[0].masked
    region = added[0]
    assert (region.start_frame, region.end_frame) == (0, 80)
    assert all(abs(a - b) <= 1 for a, b in zip((region.box.x0, region.box.y0, region.box.x1, region.box.y1),
                                               (20, 30, 80, 60), strict=True)), region.box
    assert review.edited and review.selected_region == region and region in video.regions
    draft = json.loads(next((tmp_path / "archive" / "review-drafts").iterdir()).read_text())
    assert OverlaySet.from_json(draft["overlays"]) == review.overlays          # survives a crash
    qtbot.mouseClick(review.undo_button, Qt.MouseButton.LeftButton)
    assert review.overlays == found and not review.edited
    qtbot.mouseClick(review.redo_button, Qt.MouseButton.LeftButton)
    assert review.overlays.regions.count(region) == 1
    # Drag it by its middle: moved (10 px right in the picture, about).
    middle = video.widget_rect(region.box).center()
    scale = video.widget_rect(Box(0, 0, 100, 100)).width() / 100
    drag(qtbot, video, middle, middle + QPoint(round(10 * scale), 0))
    moved = review.selected_region
    assert moved is not None and region not in review.overlays.regions
    assert abs(moved.box.x0 - region.box.x0 - 10) <= 1 and moved.box.y0 == region.box.y0
    assert moved.box.width == region.box.width
    # Its frames: from the playhead, to the playhead.
    review.show_frame(5)
    qtbot.mouseClick(review.region_from_button, Qt.MouseButton.LeftButton)
    review.show_frame(64)
    qtbot.mouseClick(review.region_to_button, Qt.MouseButton.LeftButton)
    kept = review.selected_region
    assert kept is not None and (kept.start_frame, kept.end_frame) == (5, 65) and kept.box == moved.box
    review.show_frame(70)
    assert kept not in video.regions                                       # not drawn where it does not apply
    # A second region, removed again with the Delete key.
    review.show_frame(30)
    other = video.widget_rect(Box(100, 60, 150, 90))
    drag(qtbot, video, other.topLeft(), other.bottomRight())
    assert len(review.overlays.regions) == len(found.regions) + 2
    qtbot.mouseClick(video, Qt.MouseButton.LeftButton, pos=video.widget_rect(kept.box).center())
    assert review.selected_region == kept
    qtbot.mouseClick(video, Qt.MouseButton.LeftButton, pos=other.center())
    assert review.selected_region not in (None, kept)
    qtbot.keyClick(review, Qt.Key.Key_Delete)
    assert [r for r in review.overlays.regions if r not in found.regions] == [kept]

    # Mark reviewed asks for a re-render first; the re-render masks exactly the edited regions.
    entry = entry_for(window, "CASE-A")
    qtbot.mouseClick(review.reviewed_button, Qt.MouseButton.LeftButton)
    assert entry_for(window, "CASE-A").status == NEEDS_REVIEW
    with qtbot.waitSignal(review.loaded, timeout=RUN_TIMEOUT_MS):
        qtbot.mouseClick(review.rerender_button, Qt.MouseButton.LeftButton)
    entry = entry_for(window, "CASE-A")
    regions_file = entry.job.options.overlays_file
    assert regions_file is not None and regions_file.is_relative_to(tmp_path / "archive")
    assert review.overlays == review.saved_overlays and kept in review.overlays.regions and not review.edited
    assert spans_of(review) == [(10, 20), (50, 60)]
    frames = decoded_frames(entry.output)
    for index in (5, 30, 64):
        assert luma(frames[index], kept.box) <= BLACK_LUMA_MAX, index
    assert luma(frames[4], kept.box) > 60 and luma(frames[65], kept.box) > 60
    assert read_barcode(frames[30]) == 30 and luma(frames[30], Box(100, 60, 150, 90)) > 60     # removed: shown
    qtbot.mouseClick(review.reviewed_button, Qt.MouseButton.LeftButton)
    entry = entry_for(window, "CASE-A")
    assert entry.status == REVIEWED
    report = json.loads((tmp_path / "shared" / entry.job.report.name).read_text(encoding="utf-8"))
    assert report["overlays"]["edited_in_review"] is True
    assert kept.to_json() in report["overlays"]["regions"]
    assert str(tmp_path / "archive") not in json.dumps(report)


def test_region_edits_survive_a_crash_of_the_app(qtbot, reviewed_window, make_window) -> None:
    from endoshare.overlay.text import Box

    review = reviewed_window.review
    before = review.overlays
    review.add_region(Box(10, 20, 60, 50))
    edited = review.overlays
    assert edited != before and review.edited
    again = make_window(require_review=True, workers=2)       # the app started again after a crash
    open_review_of(qtbot, again, "CASE-A")
    assert again.review.overlays == edited and again.review.edited and "restored" in again.review.state.text()
    qtbot.mouseClick(again.review.undo_button, Qt.MouseButton.LeftButton)
    assert again.review.overlays == before and not again.review.edited


def test_a_region_left_visible_can_be_masked(qtbot, reviewed_window) -> None:
    from endoshare.overlay.regions import OverlayRegion, OverlaySet
    from endoshare.overlay.text import Box

    review = reviewed_window.review
    visible = OverlayRegion(Box(90, 40, 150, 70), 20, 60, "transient", masked=False)
    review.saved_overlays = OverlaySet.of([visible])         # as if the finder had left it visible
    review.set_overlays(review.saved_overlays, None)
    review.show_frame(30)
    assert review.video.regions == (visible,) and not review.mask_region_button.isEnabled()
    qtbot.mouseClick(review.video, Qt.MouseButton.LeftButton, pos=review.video.widget_rect(visible.box).center())
    assert review.selected_region == visible and review.mask_region_button.isEnabled()
    qtbot.mouseClick(review.mask_region_button, Qt.MouseButton.LeftButton)
    masked = review.selected_region
    assert masked is not None and masked.masked and masked.kind == "manual" and masked.box == visible.box
    assert review.overlays.boxes_at(30) == (visible.box,) and review.edited
    qtbot.keyClick(review, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert review.overlays.regions == (visible,) and not review.edited
