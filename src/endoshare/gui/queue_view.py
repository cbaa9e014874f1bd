"""The queue: the archive's crash-safe job queue (:mod:`endoshare.jobs`), shown and run from the window.

Nothing here runs a case by itself: cases are jobs of the archive's SQLite queue, run by the core's
coordinator (:func:`endoshare.jobs.runner.run_queue`, the same as ``endoshare queue run``) in one
background thread, with each case rendered in a worker process.  So the queue, the outputs held for
review and the review records survive a restart or a crash, every change writes the same audit line as
the CLI, and a case interrupted by a crash runs again on the next Start.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
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

from ..cases import discover_case
from ..errors import EndoshareError
from ..jobs.queue import Job, JobQueue, JobState
from ..jobs.review import Review, ReviewState, hide_job, mark_reviewed, replace_job, reviews
from ..jobs.runner import (
    Executor,
    LocalExecutor,
    QueueEvent,
    QueueEventKind,
    add_job,
    cancel_job,
    retry_job,
    run_queue,
    runner_alive,
)
from ..overlay.regions import OverlaySet
from ..pipeline import Phase
from ..storage import private_dir, write_atomically
from ..timeline import SegmentSet
from .settings import GuiSettings, validate_settings
from .staging import STAGING_FOLDER
from .workers import plain


class EntryStatus(StrEnum):
    """A case as the window shows it: its job's state, whether its runner lives, and its review."""

    WAITING = "waiting"
    RUNNING = "running"
    #: Its runner stopped or died while it ran: Start runs it again.
    INTERRUPTED = "interrupted"
    #: Done, held back from the shared folder until a person reviews it.
    NEEDS_REVIEW = "needs review"
    PUBLISHED = "published, not reviewed"
    REVIEWED = "reviewed, published"
    FAILED = "failed"
    STOPPED = "stopped"


WAITING, RUNNING, INTERRUPTED, NEEDS_REVIEW, PUBLISHED, REVIEWED, FAILED, STOPPED = EntryStatus
STATUS_COLOURS = {WAITING: "#eeeeee", RUNNING: "#bbdefb", INTERRUPTED: "#ffe0b2", NEEDS_REVIEW: "#fff3c4",
                  PUBLISHED: "#fff3c4", REVIEWED: "#c8e6c9", FAILED: "#ffcdd2", STOPPED: "#e0e0e0"}
#: Spans a person edited in the review view, kept in the archive as the record of what was redacted.
REVIEWED_SPANS_FOLDER = "reviewed-spans"
PHASE_NAMES: dict[str, str] = {
    Phase.PROBE: "reading clips", Phase.DETECT: "detecting", Phase.OVERLAYS: "finding burned-in text",
    Phase.RENDER: "rendering", Phase.VERIFY: "verifying", Phase.PUBLISH: "publishing", Phase.DONE: "finishing"}
REFRESH_MS = 500


@dataclass(frozen=True)
class QueueEntry:
    """One job as the window shows it."""

    job: Job
    review: Review | None
    status: EntryStatus
    live_fraction: float | None = None
    live_phase: str | None = None

    @property
    def entry_id(self) -> str:
        return str(self.job.id)

    @property
    def case_id(self) -> str:
        return self.job.case_id

    @property
    def folder(self) -> Path:
        return self.job.folder

    @property
    def held(self) -> bool:
        return self.job.options.held_for_review

    @property
    def reviewed(self) -> bool:
        return self.review is not None and self.review.state == ReviewState.REVIEWED

    @property
    def output(self) -> Path | None:
        """Where the output is now (moved into the shared folder when a held case was reviewed)."""
        if self.review is not None and self.review.output is not None:
            return self.review.output
        return self.job.output

    def status_text(self) -> str:
        if self.status == RUNNING:
            fraction = self.live_fraction if self.live_fraction is not None else self.job.fraction
            phase = self.live_phase or self.job.phase or "starting"
            return f"running {int(fraction * 100)} % ({PHASE_NAMES.get(phase, phase)})"
        if self.status == FAILED:
            return f"failed: {plain(self.job.error or '')}"
        if self.status == INTERRUPTED:
            return "interrupted: press Start to run it again"
        return self.status


def entry_status(job: Job, review: Review | None, running_here: bool, archive: Path) -> EntryStatus:
    if job.state == JobState.PENDING:
        return INTERRUPTED if job.error_type == "Interrupted" else WAITING
    if job.state == JobState.RUNNING:
        return RUNNING if running_here or runner_alive(archive, job.runner) else INTERRUPTED
    if job.state == JobState.FAILED:
        return FAILED
    if job.state == JobState.CANCELLED:
        return STOPPED
    if review is not None and review.state == ReviewState.REVIEWED:
        return REVIEWED
    return NEEDS_REVIEW if job.options.held_for_review else PUBLISHED


class RunnerSignals(QObject):
    # Not "event": that name is QObject.event(), which Qt calls for every event the object receives.
    queue_event = Signal(object)  # QueueEvent
    finished = Signal(str)        # "" or an error message


class QueueRunner:
    """The core coordinator over the archive's queue, in one background thread."""

    def __init__(self, archive: Path, executor: Executor) -> None:
        self.signals = RunnerSignals()
        self._stop = threading.Event()
        self.archive = archive
        self.executor = executor
        self.thread = threading.Thread(target=self._run, name="endoshare-queue", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def wait(self, seconds: float | None = None) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def _run(self) -> None:
        message = ""
        try:
            with JobQueue(self.archive) as queue:
                run_queue(queue, self.executor, on_event=self.signals.queue_event.emit, stop=self._stop.is_set)
        except EndoshareError as exc:
            message = str(exc)
        except Exception as exc:  # a bug: say so instead of dying silently
            message = f"Unexpected error in the queue: {exc!r}; please report it."
        finally:
            try:
                self.executor.close()
            finally:
                self.signals.finished.emit(message)


class QueueView(QWidget):
    review_requested = Signal(str)
    #: Emitted with the entry id whenever an entry's status, progress or result changes.
    entry_changed = Signal(str)
    #: An entry left the list (removed, or replaced by a re-render).
    entry_removed = Signal(str)

    COLUMNS = ("Patient ID", "Status", "Progress", "Output", "Clips")

    def __init__(self, settings: Callable[[], GuiSettings], parent: QWidget | None = None,
                 executor_factory: Callable[[int], Executor] | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.executor_factory = executor_factory or (lambda workers: LocalExecutor(workers))
        self.entries: dict[str, QueueEntry] = {}
        self.runner: QueueRunner | None = None
        self.last_runner: QueueRunner | None = None
        self.live: dict[int, QueueEvent] = {}
        self.eta: float | None = None
        self.error_dialog: QMessageBox | None = None
        self._db: JobQueue | None = None
        self._clips: dict[int, str] = {}
        #: Asks the user; replaced in tests.  (title, text) → True for "yes".
        self.ask: Callable[[str, str], bool] = self._ask

        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(1, 260)
        header.resizeSection(2, 120)
        header.resizeSection(3, 320)
        header.setStretchLastSection(True)          # the clip list takes what is left, never more
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(lambda *_: self.review_selected())

        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop…")
        self.retry_button = QPushButton("Retry")
        self.remove_button = QPushButton("Remove…")
        self.open_button = QPushButton("Open output folder")
        self.review_button = QPushButton("Review…")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.retry_button.clicked.connect(self.retry_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.open_button.clicked.connect(self.open_output_folder)
        self.review_button.clicked.connect(self.review_selected)
        self.summary = QLabel()
        self.output_label = QLabel()
        self.output_label.setWordWrap(True)
        self.output_label.setTextInteractionFlags(self.output_label.textInteractionFlags()
                                                  | self.output_label.textInteractionFlags().TextSelectableByMouse)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.retry_button, self.remove_button,
                       self.open_button, self.review_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.output_label)
        layout.addLayout(buttons)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.refresh()

    # --- the database ------------------------------------------------------------------------------
    def db(self) -> JobQueue | None:
        """The queue of the archive in the settings (reopened when the archive changed); None if unusable."""
        archive = self.settings().archive_dir
        if self._db is not None and self._db.archive_dir == archive:
            return self._db
        if self._db is not None:
            self._db.close()
            self._db = None
        if not archive.is_absolute() or not archive.is_dir():
            return None
        try:
            self._db = JobQueue(archive)
        except EndoshareError as exc:
            self._show_error("Cannot open the queue", str(exc))
            return None
        return self._db

    def close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def runs(self) -> dict[int, QueueEvent]:
        """Jobs this window's runner is working on (empty when it is not running)."""
        return self.live if self.running else {}

    @property
    def running(self) -> bool:
        """A run was started and has not reported its end yet (its last changes are shown once False)."""
        return self.runner is not None

    # --- entries -----------------------------------------------------------------------------------
    def add_case(self, case_id: str, folder: Path, clip_names: tuple[str, ...]) -> QueueEntry | None:
        settings = self.settings()
        problems = validate_settings(settings, load_weights=False)
        queue = self.db()
        if problems or queue is None:
            self._show_error("Cannot add the case: fix the settings first",
                             "Open File → Settings and fix:\n• " + "\n• ".join(problems or ("the archive folder",)))
            return None
        try:
            job = add_job(queue, folder, settings.process_options(), case_id)
        except EndoshareError as exc:
            self._show_error(f"Cannot add case {case_id}", str(exc))
            return None
        self.refresh()
        return self.entries.get(str(job.id))

    def has_active_case(self, case_id: str) -> bool:
        """A case with this patient ID is waiting or running."""
        return any(e.case_id == case_id and e.job.state in (JobState.PENDING, JobState.RUNNING)
                   for e in self.entries.values())

    def refresh(self) -> None:
        """Read the queue again and show it (keeps the selection)."""
        queue = self.db()
        selected = self.selected_entry()
        old = set(self.entries)
        entries: dict[str, QueueEntry] = {}
        if queue is not None:
            try:
                review_of = reviews(queue)
                jobs = queue.jobs()
            except EndoshareError as exc:
                self.summary.setText(str(exc))
                return
            for job in jobs:
                review = review_of.get(job.id)
                if review is not None and review.state in (ReviewState.REPLACED, ReviewState.REMOVED):
                    continue
                live = self.live.get(job.id) if self.running else None
                status = entry_status(job, review, live is not None, queue.archive_dir)
                entries[str(job.id)] = QueueEntry(job, review, status, live.job_fraction if live else None,
                                                  live.phase if live else None)
        changed = [key for key, entry in entries.items() if self.entries.get(key) != entry]
        self.entries = entries
        self._fill_table()
        if selected is not None and selected.entry_id in entries:
            self.select(selected.entry_id)
        self._update_buttons()
        for key in old - set(entries):
            self.entry_removed.emit(key)
        for key in changed:
            self.entry_changed.emit(key)

    def _fill_table(self) -> None:
        table = self.table
        table.blockSignals(True)
        table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries.values()):
            colour = QColor(STATUS_COLOURS[entry.status])
            output = str(entry.output) if entry.output else ""
            clips = self._clip_names(entry.job)
            texts = (entry.case_id, entry.status_text(), "", output, clips)
            for column, text in enumerate(texts):
                item = table.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    table.setItem(row, column, item)
                item.setText(text)
                item.setBackground(colour)
                item.setToolTip(entry.job.error if entry.job.error and column == 1 else text)
                if column == 0:
                    item.setData(256, entry.entry_id)   # Qt.UserRole: find the entry from its row
            bar = table.cellWidget(row, 2)
            if not isinstance(bar, QProgressBar):
                bar = QProgressBar()
                bar.setRange(0, 100)
                table.setCellWidget(row, 2, bar)
            fraction = entry.live_fraction if entry.live_fraction is not None else entry.job.fraction
            bar.setValue(100 if entry.job.state == JobState.DONE else int(fraction * 100))
        table.blockSignals(False)

    def _clip_names(self, job: Job) -> str:
        """The case's clips in the order the pipeline reads them (read once per job)."""
        if job.id not in self._clips:
            try:
                names = [p.name for p in discover_case(job.folder, job.case_id).clips]
                if job.folder.parent.name == STAGING_FOLDER:       # links named 001_<clip name>
                    names = [name.split("_", 1)[-1] for name in names]
            except (EndoshareError, OSError):
                names = []
            self._clips[job.id] = ", ".join(names)
        return self._clips[job.id]

    def row_of(self, entry_id: str) -> int:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(256) == entry_id:
                return row
        raise KeyError(entry_id)

    def selected_entry(self) -> QueueEntry | None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if not rows:
            return None
        item = self.table.item(rows.pop(), 0)
        return self.entries.get(item.data(256)) if item is not None else None

    def select(self, entry_id: str) -> None:
        self.table.selectRow(self.row_of(entry_id))

    def _update_buttons(self) -> None:
        entry = self.selected_entry()
        self.start_button.setEnabled(not self.running and any(
            e.status in (WAITING, INTERRUPTED) for e in self.entries.values()))
        self.stop_button.setEnabled(self.running)
        self.retry_button.setEnabled(entry is not None and entry.status in (FAILED, STOPPED))
        self.remove_button.setEnabled(entry is not None and entry.status != RUNNING)
        has_output = entry is not None and entry.job.state == JobState.DONE and entry.output is not None
        self.open_button.setEnabled(has_output)
        self.review_button.setEnabled(has_output)
        counts: dict[str, int] = {}
        for e in self.entries.values():
            counts[e.status] = counts.get(e.status, 0) + 1
        text = ", ".join(f"{n} {status}" for status, n in counts.items())
        if self.running and self.eta is not None:
            minutes, seconds = divmod(int(self.eta), 60)
            text += f" · about {minutes} min {seconds:02d} s left"
        self.summary.setText(text)
        self.output_label.setText(f"Output: {entry.output}" if entry is not None and entry.output else "")

    # --- running -----------------------------------------------------------------------------------
    def start(self) -> bool:
        """Run every waiting case (and those added meanwhile) with the core's queue runner."""
        if self.running:
            return False
        settings = self.settings()
        problems = validate_settings(settings, load_weights=False)
        if problems or self.db() is None:
            self._show_error("Cannot start: fix the settings first",
                             "Open File → Settings and fix:\n• " + "\n• ".join(problems or ("the archive folder",)))
            return False
        self.live.clear()
        self.eta = None
        self.runner = QueueRunner(settings.archive_dir, self.executor_factory(settings.workers))
        self.runner.signals.queue_event.connect(self._on_event)
        self.runner.signals.finished.connect(self._on_runner_finished)
        self.last_runner = self.runner
        self.runner.start()
        self.timer.start()
        self.refresh()
        return True

    def stop(self) -> bool:
        """Ask, then stop the run: running cases are interrupted and wait for the next Start."""
        if not self.running:
            return False
        if not self.ask("Stop processing?", "Stop the queue? Running cases are stopped; nothing partial is "
                        "published, and they run again when you press Start."):
            return False
        self.cancel_all()
        return True

    def cancel_all(self) -> None:
        if self.runner is not None:
            self.runner.stop()

    def wait(self, msecs: int = -1) -> bool:
        if self.last_runner is None:
            return True
        return self.last_runner.wait(None if msecs < 0 else msecs / 1000)

    def _on_event(self, event: QueueEvent) -> None:
        if not event.kind.finished:
            self.live[event.job_id] = event
        else:
            self.live.pop(event.job_id, None)
        self.eta = event.eta_seconds
        if event.kind == QueueEventKind.FAILED:
            self._show_error(f"Case {event.case_id} failed", event.error or "")
        if event.kind != QueueEventKind.PROGRESS:
            self.refresh()
        else:
            key = str(event.job_id)
            entry = self.entries.get(key)
            if entry is not None:
                self.entries[key] = QueueEntry(entry.job, entry.review, RUNNING, event.job_fraction, event.phase)
                self._fill_table()
                self._update_buttons()
                self.entry_changed.emit(key)

    def _on_runner_finished(self, message: str) -> None:
        self.runner = None
        self.timer.stop()
        self.live.clear()
        self.eta = None
        if message:
            self._show_error("The queue stopped", message)
        self.refresh()

    def _show_error(self, title: str, message: str) -> None:
        # Not modal: the queue goes on with the next case while the message waits to be read.
        dialog = QMessageBox(QMessageBox.Icon.Warning, title, plain(message), QMessageBox.StandardButton.Ok, self)
        dialog.setModal(False)
        dialog.show()
        self.error_dialog = dialog

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # --- other actions -----------------------------------------------------------------------------
    def retry_selected(self) -> None:
        entry = self.selected_entry()
        queue = self.db()
        if entry is None or queue is None or entry.status not in (FAILED, STOPPED):
            return
        try:
            retry_job(queue, entry.job.id)
        except EndoshareError as exc:
            self._show_error("Cannot retry", str(exc))
        self.refresh()

    def remove_selected(self) -> None:
        entry = self.selected_entry()
        queue = self.db()
        if entry is None or queue is None or entry.status == RUNNING:
            return
        held = entry.status == NEEDS_REVIEW
        warning = (" Its output stays in the archive's holding folder, unpublished." if held else "")
        if not self.ask("Remove this case from the list?",
                        f"Remove case {entry.case_id} from the queue list?{warning} Its files and the audit "
                        "log stay."):
            return
        try:
            if entry.job.state == JobState.PENDING:
                cancel_job(queue, entry.job.id)
            hide_job(queue, entry.job.id)
        except EndoshareError as exc:
            self._show_error("Cannot remove the case", str(exc))
        self.refresh()

    def open_output_folder(self) -> None:
        entry = self.selected_entry()
        if entry is not None and entry.output is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.output.parent)))

    def review_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None and entry.job.state == JobState.DONE and entry.output is not None:
            self.review_requested.emit(entry.entry_id)

    def rerender(self, entry_id: str, segments: SegmentSet, overlays: OverlaySet | None = None) -> str | None:
        """Queue the case again with ``segments`` (merged-timeline frames), without detecting again, and
        ``overlays`` (edited regions: masked as given, the finder does not run; None: as before), and start
        the queue; the new entry's id, or None.  Both files stay private in the archive."""
        entry = self.entries.get(entry_id)
        queue = self.db()
        if entry is None or queue is None:
            return None
        archive = queue.archive_dir
        name = entry.job.pseudonym or f"job-{entry.job.id}"
        path = archive / REVIEWED_SPANS_FOLDER / f"{name}-job{entry.job.id}.json"
        regions = path.with_name(f"{name}-job{entry.job.id}.overlays.json") if overlays is not None else None
        try:
            private_dir(path.parent)
            write_atomically(path, json.dumps({"segments": segments.to_json()}, indent=1).encode("utf-8"))
            if overlays is not None and regions is not None:
                write_atomically(regions, json.dumps(overlays.to_json(), indent=1).encode("utf-8"))
            new = replace_job(queue, entry.job.id, path, regions)
        except (OSError, EndoshareError) as exc:
            self._show_error("Cannot save the edited spans", f"{path}: {exc}")
            return None
        self.refresh()
        if not self.running:
            self.start()
        return str(new.id)

    def mark_reviewed(self, entry_id: str, spans: SegmentSet) -> bool:
        """Record the review (reviewer, time, final spans); a held output is published to the shared folder."""
        entry = self.entries.get(entry_id)
        queue = self.db()
        if entry is None or queue is None:
            self._show_error("The case is gone", "This case is no longer in the queue; nothing was recorded.")
            return False
        try:
            mark_reviewed(queue, entry.job.id, spans, self.settings().shared_dir)
        except EndoshareError as exc:
            self._show_error("Cannot mark the case reviewed", str(exc))
            return False
        self.refresh()
        return True
