"""The main window: Case builder, Queue, Review and Help tabs over one settings store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QMessageBox, QTabWidget, QWidget

from ..pipeline import CaseResult
from .case_builder import CaseBuilder
from .desktop import DesktopSession
from .help import DISCLAIMER, HelpView, show_about
from .queue_view import AWAITING_REVIEW, DONE, QueueView
from .review import ReviewView
from .settings import GuiSettings, SettingsDialog, load_settings, settings_store


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
        self.review.rerender_requested.connect(self._rerender)
        self.review.reviewed.connect(self.queue.mark_reviewed)
        self.queue.entry_changed.connect(self._entry_changed)

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

    def reload_settings(self) -> None:
        self._settings = load_settings(self.store)

    def _add_case(self, case_id: str, folder: Path, clip_names: tuple[str, ...]) -> None:
        self.queue.add_case(case_id, folder, clip_names)
        self.tabs.setCurrentWidget(self.queue)

    def open_review(self, entry_id: str) -> None:
        self.review.open_entry(self.queue.entries[entry_id])
        self.tabs.setCurrentWidget(self.review)

    def _rerender(self, entry_id: str, segments: object) -> None:
        self.queue.rerender(entry_id, segments)  # type: ignore[arg-type]

    def _entry_changed(self, entry_id: str) -> None:
        # A re-render asked for in the review ended: show the new output, or say why it failed.
        entry = self.queue.entries.get(entry_id)
        if entry is None or self.review.entry is not entry or not self.review.rerender_pending \
                or entry_id in self.queue.runs:
            return
        self.review.rerender_pending = False
        if entry.status in (DONE, AWAITING_REVIEW) and isinstance(entry.result, CaseResult):
            self.review.open_entry(entry)
        else:
            self.review.state.setText(f"Re-render {entry.status_text()}")
            self.review.set_controls_enabled(True)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.queue.runs:
            answer = QMessageBox.question(self, "Quit Endoshare?", "Cases are still running. Stop them and quit? "
                                          "Nothing half-written is published.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.queue.cancel_all()
        self.queue.wait()
        self.builder.tasks.wait()
        self.review.tasks.wait()
        super().closeEvent(event)


def main(argv: Sequence[str] | None = None, settings_path: Path | None = None) -> int:
    app = QApplication.instance() or QApplication(list(argv) if argv is not None else sys.argv[:1])
    session = DesktopSession(app)   # name, icon, log file, SIGTERM/Ctrl-C close the window
    window = MainWindow(settings_path)
    session.watch(window.queue)
    window.show()
    code = int(app.exec())
    session.close(code)
    return code
