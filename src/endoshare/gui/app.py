"""The main window: Case builder, Queue, Review and Help tabs over one settings store."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QTabWidget, QWidget

from ..jobs.queue import JobState
from ..overlay.regions import OverlaySet
from ..pipeline import overlays_path
from ..timeline import SegmentSet
from .case_builder import CaseBuilder
from .desktop import DesktopSession
from .help import DISCLAIMER, HelpView, show_about
from .queue_view import INTERRUPTED, RUNNING, WAITING, QueueEntry, QueueView
from .review import REVIEW_DRAFTS_FOLDER, ReviewCase, ReviewView
from .settings import GuiSettings, SettingsDialog, first_run, load_settings, settings_store


class MainWindow(QMainWindow):
    def __init__(self, settings_path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Endoshare")
        self.store = settings_store(settings_path)
        self._settings = load_settings(self.store)

        self.queue = QueueView(self.settings)
        self.builder = CaseBuilder(self.settings, self.queue.has_active_case)
        self.review = ReviewView()
        self.help = HelpView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.builder, "1 · Case builder")
        self.tabs.addTab(self.queue, "2 · Queue")
        self.tabs.addTab(self.review, "3 · Review")
        self.tabs.addTab(self.help, "Help")
        self.setCentralWidget(self.tabs)

        self.builder.case_confirmed.connect(self._add_case)
        self.queue.review_requested.connect(self.open_review)
        self.rerender_key: str | None = None     # the job re-rendering the reviewed case
        self.replacing: str | None = None
        self.review.rerender_requested.connect(self._rerender)
        self.review.reviewed.connect(self._reviewed)
        self.queue.entry_changed.connect(self._entry_changed)
        self.queue.entry_removed.connect(self._entry_removed)
        self.tabs.tabBar().setFocusPolicy(Qt.FocusPolicy.NoFocus)   # arrow keys step frames in the review

        file_menu = self.menuBar().addMenu("&File")
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.triggered.connect(self.edit_settings)
        file_menu.addAction(self.settings_action)
        quit_action = QAction("&Quit", self)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        how_action = QAction("&How to use", self)
        how_action.triggered.connect(lambda: self.tabs.setCurrentWidget(self.help))
        help_menu.addAction(how_action)
        about_action = QAction("&About Endoshare", self)
        about_action.triggered.connect(lambda: show_about(self))
        help_menu.addAction(about_action)
        notice = QLabel(DISCLAIMER)
        notice.setStyleSheet("color: #5d4037;")
        self.statusBar().addWidget(notice, 1)
        self.resize(1100, 720)

    def settings(self) -> GuiSettings:
        return self._settings

    def settings_dialog(self) -> SettingsDialog:
        return SettingsDialog(self.store, self)

    def edit_settings(self) -> None:
        if self.settings_dialog().exec():
            self.reload_settings()

    def first_run_settings(self) -> SettingsDialog:
        """The settings dialog with a welcome text, shown (not blocking) at the very first start."""
        dialog = self.settings_dialog()
        dialog.show_first_run()
        dialog.accepted.connect(self.reload_settings)
        dialog.setModal(True)
        dialog.show()
        return dialog

    def reload_settings(self) -> None:
        self._settings = load_settings(self.store)

    def _add_case(self, case_id: str, folder: Path, clip_names: tuple[str, ...]) -> None:
        if self.queue.add_case(case_id, folder, clip_names) is not None:
            self.tabs.setCurrentWidget(self.queue)

    def review_case(self, entry: QueueEntry) -> ReviewCase:
        job = entry.job
        report = job.report
        if entry.reviewed and entry.output is not None and report is not None:
            report = entry.output.parent / report.name         # published with its video
        overlays = overlays_path(job.options.archive_dir, job.pseudonym) if job.pseudonym else None
        return ReviewCase(key=entry.entry_id, case_id=job.case_id, folder=job.folder, output=entry.output,
                          report=report, redaction=job.options.redaction.value, status=entry.status,
                          overlays=overlays)

    def open_review(self, entry_id: str) -> None:
        entry = self.queue.entries.get(entry_id)
        if entry is None or not self.review.confirm_discard():
            return
        self.rerender_key = None
        self.review.draft_folder = self.settings().archive_dir / REVIEW_DRAFTS_FOLDER
        self.review.open_case(self.review_case(entry))
        self.tabs.setCurrentWidget(self.review)

    def _rerender(self, entry_id: str, segments: SegmentSet, overlays: OverlaySet | None) -> None:
        self.replacing = entry_id
        try:
            new = self.queue.rerender(entry_id, segments, overlays)
        finally:
            self.replacing = None
        if new is None:
            self.review.rerender_finished(None, "The re-render could not be queued; nothing changed.")
        self.rerender_key = new

    def _reviewed(self, entry_id: str, spans: SegmentSet) -> None:
        if self.queue.mark_reviewed(entry_id, spans):
            self.review.open_case(self.review_case(self.queue.entries[entry_id]))

    def _entry_changed(self, entry_id: str) -> None:
        # A re-render asked for in the review ended: show the new output, or say why it failed.
        if entry_id != self.rerender_key:
            return
        entry = self.queue.entries.get(entry_id)
        if entry is None or entry.status in (RUNNING, WAITING, INTERRUPTED):
            return
        self.rerender_key = None
        if entry.job.state == JobState.DONE:
            self.review.rerender_finished(self.review_case(entry))
        else:
            self.review.rerender_finished(None, f"Re-render {entry.status_text()}")

    def _entry_removed(self, entry_id: str) -> None:
        case = self.review.case
        if case is not None and case.key == entry_id and entry_id != self.replacing:
            self.review.close_case(f"Case {case.case_id} was removed from the queue; its review was closed.")
        if entry_id == self.rerender_key:
            self.rerender_key = None
            self.review.close_case("The re-rendered case was removed from the queue.")

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.review.confirm_discard():
            event.ignore()
            return
        if self.queue.running:
            if not self.queue.ask("Quit Endoshare?", "Cases are still running. Stop them and quit? Nothing "
                                  "half-written is published; they run again on the next Start."):
                event.ignore()
                return
            self.queue.cancel_all()
        self.queue.wait()
        self.queue.close_db()
        self.builder.tasks.wait()
        self.review.tasks.wait()
        super().closeEvent(event)


def main(argv: Sequence[str] | None = None, settings_path: Path | None = None) -> int:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(list(argv) if argv is not None
                                                                           else sys.argv[:1])
    session = DesktopSession(app)   # name, icon, log file, SIGTERM/Ctrl-C close the window
    window = MainWindow(settings_path)
    session.watch(window.queue)
    window.show()
    if first_run(window.store):
        window.first_run_settings()
    code = int(app.exec())
    session.close(code)
    return code
