"""The queue: cases waiting, running (with the core's real progress), done, failed or held for review."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QThreadPool, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import OutputError
from ..pipeline import CaseRequest, CaseResult
from ..storage import private_dir, shared_file_mode, write_atomically
from ..timeline import SegmentSet
from .settings import GuiSettings, validate_settings
from .workers import CaseRun

PENDING, QUEUED, RUNNING, AWAITING_REVIEW, DONE, FAILED, STOPPED = (
    "pending", "queued", "running", "awaiting review", "done", "failed", "stopped")
STATUS_COLOURS = {PENDING: "#eeeeee", QUEUED: "#e3f2fd", RUNNING: "#bbdefb", AWAITING_REVIEW: "#fff3c4",
                  DONE: "#c8e6c9", FAILED: "#ffcdd2", STOPPED: "#e0e0e0"}
STARTABLE = (PENDING, STOPPED)
#: Spans a person edited in the review view, kept in the archive as the record of what was redacted.
REVIEWED_SPANS_FOLDER = "reviewed-spans"
PHASE_NAMES = {"probe": "reading clips", "detect": "detecting", "render": "rendering", "verify": "verifying",
               "done": "finishing"}


@dataclass
class QueueEntry:
    """A case in the queue; mutable because its status changes as the run goes on."""

    entry_id: str
    case_id: str
    folder: Path
    clip_names: tuple[str, ...]
    status: str = PENDING
    fraction: float = 0.0
    phase: str = ""
    error: str | None = None
    result: CaseResult | None = None
    segments_file: Path | None = None
    reviewed: bool = False
    #: The last run wrote into the private holding folder (review required when it started).
    held: bool = False

    def status_text(self) -> str:
        if self.status == RUNNING:
            return f"running {int(self.fraction * 100)} % ({PHASE_NAMES.get(self.phase, self.phase)})"
        if self.status == FAILED:
            return f"failed: {self.error}"
        if self.status == DONE and self.reviewed:
            return "done, reviewed"
        return self.status


class QueueView(QWidget):
    review_requested = Signal(str)
    #: Emitted with the entry id whenever an entry's status, progress or result changes.
    entry_changed = Signal(str)

    COLUMNS = ("Patient ID", "Clips", "Status", "Progress", "Output")

    def __init__(self, settings: Callable[[], GuiSettings], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.entries: dict[str, QueueEntry] = {}
        self.runs: dict[str, CaseRun] = {}
        self.pool = QThreadPool(self)
        self.error_dialog: QMessageBox | None = None

        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(lambda *_: self.review_selected())

        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop…")
        self.remove_button = QPushButton("Remove")
        self.open_button = QPushButton("Open output folder")
        self.review_button = QPushButton("Review…")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.remove_button.clicked.connect(self.remove_selected)
        self.open_button.clicked.connect(self.open_output_folder)
        self.review_button.clicked.connect(self.review_selected)
        self.summary = QLabel()
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.remove_button, self.open_button,
                       self.review_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self._update_buttons()

    # --- entries -----------------------------------------------------------------------------------
    def add_case(self, case_id: str, folder: Path, clip_names: tuple[str, ...]) -> QueueEntry:
        entry = QueueEntry(uuid.uuid4().hex, case_id, folder, clip_names)
        self.entries[entry.entry_id] = entry
        row = self.table.rowCount()
        self.table.insertRow(row)
        for column in range(len(self.COLUMNS)):
            item = QTableWidgetItem()
            if column == 0:
                item.setData(256, entry.entry_id)   # Qt.UserRole: find the entry from its row
            self.table.setItem(row, column, item)
        bar = QProgressBar()
        bar.setRange(0, 100)
        self.table.setCellWidget(row, 3, bar)
        self._refresh(entry)
        return entry

    def has_active_case(self, case_id: str) -> bool:
        """A case with this patient ID is pending, queued or running."""
        return any(e.case_id == case_id and e.status in (PENDING, QUEUED, RUNNING) for e in self.entries.values())

    def row_of(self, entry_id: str) -> int:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(256) == entry_id:
                return row
        raise KeyError(entry_id)

    def selected_entry(self) -> QueueEntry | None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if not rows:
            return None
        return self.entries[self.table.item(rows.pop(), 0).data(256)]

    def select(self, entry_id: str) -> None:
        self.table.selectRow(self.row_of(entry_id))

    def _refresh(self, entry: QueueEntry) -> None:
        row = self.row_of(entry.entry_id)
        colour = QColor(STATUS_COLOURS[entry.status])
        output = entry.result.output.name if entry.result and entry.result.output else ""
        texts = (entry.case_id, ", ".join(entry.clip_names), entry.status_text(), "", output)
        for column, text in enumerate(texts):
            item = self.table.item(row, column)
            item.setText(text)
            item.setBackground(colour)
            item.setToolTip(entry.error if entry.error and column == 2 else text)
        bar = self.table.cellWidget(row, 3)
        assert isinstance(bar, QProgressBar)
        bar.setValue(100 if entry.status in (DONE, AWAITING_REVIEW) else int(entry.fraction * 100))
        self._update_buttons()
        self.entry_changed.emit(entry.entry_id)

    def _update_buttons(self) -> None:
        entry = self.selected_entry()
        self.start_button.setEnabled(any(e.status in STARTABLE for e in self.entries.values()))
        self.stop_button.setEnabled(bool(self.runs))
        self.remove_button.setEnabled(entry is not None and entry.entry_id not in self.runs)
        has_output = entry is not None and entry.result is not None and entry.result.output is not None
        self.open_button.setEnabled(has_output)
        self.review_button.setEnabled(has_output and entry is not None and entry.entry_id not in self.runs)
        counts: dict[str, int] = {}
        for e in self.entries.values():
            counts[e.status] = counts.get(e.status, 0) + 1
        self.summary.setText(", ".join(f"{n} {status}" for status, n in counts.items()))

    # --- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.start_entries([e for e in self.entries.values() if e.status in STARTABLE])

    def start_entries(self, entries: list[QueueEntry]) -> bool:
        settings = self.settings()
        problems = validate_settings(settings, load_weights=False)
        if problems:
            self._show_error("Cannot start: fix the settings first",
                             "Open File → Settings and fix:\n• " + "\n• ".join(problems))
            return False
        self.pool.setMaxThreadCount(settings.workers)
        for entry in entries:
            run = CaseRun(entry.entry_id, CaseRequest(entry.folder, entry.case_id),
                          settings.process_options(entry.segments_file))
            run.signals.progress.connect(self._on_progress)
            run.signals.finished.connect(self._on_finished)
            run.signals.failed.connect(self._on_failed)
            run.signals.cancelled.connect(self._on_cancelled)
            self.runs[entry.entry_id] = run
            entry.status, entry.fraction, entry.phase, entry.error = QUEUED, 0.0, "", None
            entry.held = settings.require_review
            self._refresh(entry)
            self.pool.start(run)
        return True

    def stop(self) -> bool:
        """Ask, then cancel every queued and running case; True when the user confirmed."""
        if not self.runs:
            return False
        answer = QMessageBox.question(
            self, "Stop processing?",
            f"Stop {len(self.runs)} case(s)? Running cases are cancelled; nothing partial is published, and "
            "you can start them again later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.cancel_all()
        return True

    def cancel_all(self) -> None:
        for entry_id, run in list(self.runs.items()):
            if self.pool.tryTake(run):          # never started: nothing to cancel
                del self.runs[entry_id]
                self.entries[entry_id].status = PENDING
                self._refresh(self.entries[entry_id])
            else:
                run.cancel()

    def wait(self, msecs: int = -1) -> bool:
        return self.pool.waitForDone(msecs)

    def _on_progress(self, entry_id: str, fraction: float, phase: str) -> None:
        entry = self.entries.get(entry_id)
        if entry is None or entry_id not in self.runs:
            return
        entry.status, entry.fraction, entry.phase = RUNNING, fraction, phase
        self._refresh(entry)

    def _on_finished(self, entry_id: str, result: CaseResult) -> None:
        self.runs.pop(entry_id, None)
        entry = self.entries[entry_id]
        entry.result, entry.fraction, entry.reviewed = result, 1.0, False
        entry.status = AWAITING_REVIEW if entry.held else DONE
        self._refresh(entry)

    def _on_failed(self, entry_id: str, message: str, error_type: str) -> None:
        self.runs.pop(entry_id, None)
        entry = self.entries[entry_id]
        entry.status, entry.error = FAILED, message
        self._refresh(entry)
        self._show_error(f"Case {entry.case_id} failed", message)

    def _on_cancelled(self, entry_id: str) -> None:
        self.runs.pop(entry_id, None)
        entry = self.entries[entry_id]
        entry.status, entry.fraction = STOPPED, 0.0
        self._refresh(entry)

    def _show_error(self, title: str, message: str) -> None:
        # Not modal: the queue goes on with the next case while the message waits to be read.
        dialog = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        dialog.setModal(False)
        dialog.show()
        self.error_dialog = dialog

    # --- other actions -----------------------------------------------------------------------------
    def remove_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or entry.entry_id in self.runs:
            return
        self.table.removeRow(self.row_of(entry.entry_id))
        del self.entries[entry.entry_id]
        self._update_buttons()

    def output_folder(self, entry: QueueEntry) -> Path | None:
        return entry.result.output.parent if entry.result and entry.result.output else None

    def open_output_folder(self) -> None:
        entry = self.selected_entry()
        folder = self.output_folder(entry) if entry else None
        if folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def review_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None and entry.result is not None and entry.entry_id not in self.runs:
            self.review_requested.emit(entry.entry_id)

    def rerender(self, entry_id: str, segments: SegmentSet) -> bool:
        """Render the case again from ``segments`` (merged-timeline frames), without detecting again."""
        entry = self.entries[entry_id]
        if entry_id in self.runs:
            return False
        archive = self.settings().archive_dir
        name = entry.result.pseudonym if entry.result and entry.result.pseudonym else entry.entry_id
        path = archive / REVIEWED_SPANS_FOLDER / f"{name}.json"
        try:
            private_dir(path.parent)
            write_atomically(path, json.dumps({"segments": segments.to_json(), "case_id": entry.case_id},
                                              indent=1).encode("utf-8"))
        except OSError as exc:
            self._show_error("Cannot save the edited spans", f"{path}: {exc}")
            return False
        entry.segments_file = path
        return self.start_entries([entry])

    def mark_reviewed(self, entry_id: str) -> None:
        """Record the review; a held output is published to the shared folder now."""
        entry = self.entries[entry_id]
        if entry_id in self.runs:
            self._show_error("The case is being rendered", "Wait until the case has finished, review the new "
                             "output, then mark it reviewed.")
            return
        if entry.status == AWAITING_REVIEW and entry.result is not None:
            try:
                entry.result = publish(entry.result, self.settings().shared_dir)
            except OutputError as exc:
                self._show_error("Cannot publish the output", str(exc))
                return
            entry.status, entry.held = DONE, False
        entry.reviewed = True
        self._refresh(entry)


def publish(result: CaseResult, shared_dir: Path) -> CaseResult:
    """Move a held output and its report into ``shared_dir``: the video first (the commit point), so that a
    report never stands there without its video; both get the shared files' mode (the umask's)."""
    assert result.output is not None
    moved: dict[str, Path] = {}
    try:
        shared_dir.mkdir(parents=True, exist_ok=True)
        for key, path in (("output", result.output), ("report", result.report)):
            if path is None:
                continue
            target = shared_dir / path.name
            os.chmod(path, shared_file_mode())
            try:
                os.replace(path, target)
            except OSError:
                shutil.move(str(path), str(target))   # another volume
            moved[key] = target
    except OSError as exc:
        raise OutputError(f"Cannot move the reviewed output into the shared folder {shared_dir} ({exc}); "
                          "check that it is writable and has space.", path=shared_dir) from None
    return replace(result, **moved)
