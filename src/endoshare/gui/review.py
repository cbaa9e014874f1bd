"""Review a case: play and scrub the merged timeline, see and correct the out-of-body spans, re-render.

Spans are edited in frames of the merged timeline (start inclusive, end exclusive), the unit the
pipeline's segments file uses, so a re-render redacts exactly the frames shown here as redacted.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from PySide6.QtCore import QRect, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..cases import discover_case
from ..errors import EndoshareError
from ..media.join import JoinPlan, plan_join
from ..pipeline import probe_case
from ..timeline import Segment, SegmentSet
from .case_builder import rgb_pixmap
from .frames import RGB, FrameSource
from .queue_view import QueueEntry
from .workers import TaskRunner

THUMBNAILS = 16
THUMBNAIL_WIDTH = 96
SPAN_COLOUR = QColor(220, 30, 40, 120)


def format_time(frame: int, rate: Fraction) -> str:
    seconds = Fraction(frame) / rate
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}:{rest:06.3f}"


def load_plan(folder: Path, case_id: str) -> JoinPlan:
    """The merged timeline exactly as the pipeline builds it for this case."""
    return plan_join(probe_case(discover_case(folder, case_id)))


def report_spans(report: Path | None) -> SegmentSet:
    """The spans an output was redacted with, from its report (empty when there is no report)."""
    if report is None or not report.exists():
        return SegmentSet()
    data = json.loads(report.read_text(encoding="utf-8"))
    return SegmentSet.from_json(data.get("redaction", {}).get("spans", []))


def thumbnail_strip(plan: JoinPlan, count: int = THUMBNAILS, width: int = THUMBNAIL_WIDTH) -> list[RGB]:
    total = plan.total_frames
    picks = sorted({min(total - 1, (2 * k + 1) * total // (2 * count)) for k in range(count)})
    with FrameSource(plan) as source:
        return [source.rgb(i, width) for i in picks]


class TimelineBar(QWidget):
    """Thumbnails across the case, the spans in red over them, and the playhead; click or drag to scrub."""

    frame_chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.total = 0
        self.current = 0
        self.spans = SegmentSet()
        self.selected: Segment | None = None
        self.thumbnails: list[QPixmap] = []
        self.setMinimumHeight(72)
        self.setMouseTracking(False)

    def x_of(self, frame: int) -> int:
        return round(frame * self.width() / self.total) if self.total else 0

    def frame_at(self, x: float) -> int:
        if not self.total:
            return 0
        return max(0, min(self.total - 1, int(x * self.total / max(1, self.width()))))

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#202020"))
        height = self.height()
        if self.thumbnails:
            step = self.width() / len(self.thumbnails)
            for n, pixmap in enumerate(self.thumbnails):
                painter.drawPixmap(QRect(round(n * step), 0, round(step) + 1, height - 10), pixmap)
        for span in self.spans:
            left, right = self.x_of(span.start_frame), self.x_of(span.end_frame)
            painter.fillRect(QRect(left, 0, max(2, right - left), height), SPAN_COLOUR)
            painter.fillRect(QRect(left, height - 10, max(2, right - left), 10), QColor(220, 30, 40))
        if self.selected is not None:
            left, right = self.x_of(self.selected.start_frame), self.x_of(self.selected.end_frame)
            painter.setPen(QPen(QColor("#ffeb3b"), 2))
            painter.drawRect(QRect(left, 1, max(2, right - left), height - 2))
        if self.total:
            painter.setPen(QPen(QColor("#ffffff"), 2))
            x = self.x_of(self.current)
            painter.drawLine(x, 0, x, height)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.frame_chosen.emit(self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.frame_chosen.emit(self.frame_at(event.position().x()))


class ReviewView(QWidget):
    rerender_requested = Signal(str, object)    # entry id, SegmentSet
    reviewed = Signal(str)
    #: The case's timeline is ready (after the clips were read in a worker thread), or could not be read.
    loaded = Signal()
    load_failed = Signal(str)
    thumbnails_ready = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = TaskRunner(parent=self)
        self.entry: QueueEntry | None = None
        #: A re-render of the shown case was asked for and has not finished yet.
        self.rerender_pending = False
        self.source: FrameSource | None = None
        self.spans = SegmentSet()
        self.edited = False
        self.current = 0
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._next_frame)

        self.title = QLabel("Choose a finished case in the queue and press Review…")
        self.title.setWordWrap(True)
        self.video = QLabel()
        self.video.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.video.setMinimumSize(480, 270)
        self.video.setStyleSheet("background: #101010;")
        self.frame_state = QLabel()
        self.timeline = TimelineBar()
        self.timeline.frame_chosen.connect(self.show_frame)

        self.play_button = QPushButton("Play")
        self.play_button.clicked.connect(self.toggle_play)
        self.back_button = QPushButton("◀ 1 frame")
        self.back_button.clicked.connect(lambda: self.show_frame(self.current - 1))
        self.forward_button = QPushButton("1 frame ▶")
        self.forward_button.clicked.connect(lambda: self.show_frame(self.current + 1))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(self.show_frame)
        self.frame_box = QSpinBox()
        self.frame_box.setKeyboardTracking(False)
        self.frame_box.valueChanged.connect(self.show_frame)
        self.time_label = QLabel()
        player = QHBoxLayout()
        for widget in (self.play_button, self.back_button, self.forward_button):
            player.addWidget(widget)
        player.addWidget(self.slider, 1)
        player.addWidget(QLabel("Frame"))
        player.addWidget(self.frame_box)
        player.addWidget(self.time_label)

        self.span_table = QTableWidget(0, 4)
        self.span_table.setHorizontalHeaderLabels(["First frame", "End frame (excl.)", "Frames", "Time"])
        self.span_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.span_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.span_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.span_table.verticalHeader().hide()
        self.span_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.span_table.horizontalHeader().setStretchLastSection(True)
        self.span_table.itemSelectionChanged.connect(self._span_selected)
        self.start_box = QSpinBox()
        self.end_box = QSpinBox()
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_span_boxes)
        self.add_button = QPushButton("Add span at playhead")
        self.add_button.clicked.connect(self.add_span_at_playhead)
        self.remove_button = QPushButton("Remove span")
        self.remove_button.clicked.connect(self.remove_selected_span)
        self.start_here_button = QPushButton("Start here")
        self.start_here_button.clicked.connect(lambda: self._set_edge(start=True))
        self.end_here_button = QPushButton("End here")
        self.end_here_button.clicked.connect(lambda: self._set_edge(start=False))
        edit_row = QHBoxLayout()
        edit_row.addWidget(QLabel("First"))
        edit_row.addWidget(self.start_box)
        edit_row.addWidget(QLabel("End (excl.)"))
        edit_row.addWidget(self.end_box)
        for button in (self.apply_button, self.start_here_button, self.end_here_button, self.add_button,
                       self.remove_button):
            edit_row.addWidget(button)

        self.state = QLabel()
        self.rerender_button = QPushButton("Re-render with these spans")
        self.rerender_button.clicked.connect(self.request_rerender)
        self.reviewed_button = QPushButton("Mark reviewed")
        self.reviewed_button.clicked.connect(self.mark_reviewed)
        bottom = QHBoxLayout()
        bottom.addWidget(self.state, 1)
        bottom.addWidget(self.rerender_button)
        bottom.addWidget(self.reviewed_button)

        top = QHBoxLayout()
        top.addWidget(self.video, 3)
        side = QVBoxLayout()
        side.addWidget(QLabel("Out-of-body spans (redacted in the output):"))
        side.addWidget(self.span_table, 1)
        top.addLayout(side, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(top, 1)
        layout.addWidget(self.frame_state)
        layout.addWidget(self.timeline)
        layout.addLayout(player)
        layout.addLayout(edit_row)
        layout.addLayout(bottom)
        self.set_controls_enabled(False)

    # --- loading ------------------------------------------------------------------------------------
    def open_entry(self, entry: QueueEntry) -> None:
        self.stop_playing()
        self._close_source()
        self.entry = entry
        self.set_controls_enabled(False)
        result = entry.result
        try:
            self.spans = report_spans(result.report if result else None)
        except (OSError, ValueError) as exc:
            self.load_failed.emit(f"Cannot read the report of case {entry.case_id}: {exc}")
            return
        self.edited = False
        self.title.setText(f"Reading case {entry.case_id}…")
        self.tasks.run(lambda: load_plan(entry.folder, entry.case_id), self._plan_ready, self._plan_failed)

    def _plan_ready(self, plan: JoinPlan) -> None:
        assert self.entry is not None
        self.source = FrameSource(plan)
        total = plan.total_frames
        self.spans = self.spans.clipped(total)
        for widget in (self.slider, self.frame_box, self.start_box):
            widget.blockSignals(True)
            widget.setRange(0, total - 1)
            widget.blockSignals(False)
        self.end_box.setRange(1, total)
        self.timeline.total = total
        self.timeline.thumbnails = []
        rate = plan.target.frame_rate
        self.timer.setInterval(max(1, round(1000 / float(rate))))
        result = self.entry.result
        self.title.setText(
            f"<b>Patient {self.entry.case_id}</b> → output <b>{result.output.name if result and result.output else '-'}"
            f"</b> · {total} frames at {float(rate):.3g} fps ({format_time(total, rate)}) · {self.entry.status}")
        self.set_controls_enabled(True)
        self._spans_changed(edited=False)
        self.current = -1
        self.show_frame(0)
        self.tasks.run(lambda: thumbnail_strip(plan), self._thumbnails_ready, lambda _text: None)
        self.loaded.emit()

    def _plan_failed(self, message: str) -> None:
        self.title.setText(f"Cannot review this case: {message}")
        self.load_failed.emit(message)

    def _thumbnails_ready(self, images: list[RGB]) -> None:
        self.timeline.thumbnails = [rgb_pixmap(rgb) for rgb in images]
        self.timeline.update()
        self.thumbnails_ready.emit()

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def set_controls_enabled(self, enabled: bool) -> None:
        for widget in (self.play_button, self.back_button, self.forward_button, self.slider, self.frame_box,
                       self.span_table, self.start_box, self.end_box, self.apply_button, self.add_button,
                       self.remove_button, self.start_here_button, self.end_here_button, self.rerender_button,
                       self.reviewed_button):
            widget.setEnabled(enabled)

    # --- player -------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.source.total_frames if self.source else 0

    def show_frame(self, index: int) -> None:
        if self.source is None:
            return
        index = max(0, min(self.total - 1, index))
        if index == self.current:
            return
        self.current = index
        try:
            rgb = self.source.rgb(index)
        except EndoshareError as exc:
            self.stop_playing()
            self.frame_state.setText(str(exc))
            return
        pixmap = rgb_pixmap(rgb).scaled(self.video.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                        Qt.TransformationMode.FastTransformation)
        self.video.setPixmap(pixmap)
        redacted = self.spans.contains(index)
        border = "#dc1e28" if redacted else "#101010"
        self.video.setStyleSheet(f"background: #101010; border: 4px solid {border};")
        self.frame_state.setText(f"Frame {index}: REDACTED in the output" if redacted
                                 else f"Frame {index}: shown in the output")
        for widget in (self.slider, self.frame_box):
            widget.blockSignals(True)
            widget.setValue(index)
            widget.blockSignals(False)
        self.time_label.setText(format_time(index, self.source.frame_rate))
        self.timeline.current = index
        self.timeline.update()

    def toggle_play(self) -> None:
        if self.timer.isActive():
            self.stop_playing()
        elif self.source is not None:
            self.timer.start()
            self.play_button.setText("Pause")

    def stop_playing(self) -> None:
        self.timer.stop()
        self.play_button.setText("Play")

    def _next_frame(self) -> None:
        if self.current + 1 >= self.total:
            self.stop_playing()
        else:
            self.show_frame(self.current + 1)

    # --- spans --------------------------------------------------------------------------------------
    def selected_span(self) -> Segment | None:
        rows = self.span_table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.spans):
            return None
        return self.spans.segments[rows[0].row()]

    def select_span_at(self, frame: int) -> None:
        for row, span in enumerate(self.spans):
            if frame in span:
                self.span_table.selectRow(row)
                return
        self.span_table.clearSelection()

    def _spans_changed(self, edited: bool = True, select: int | None = None) -> None:
        self.edited = self.edited or edited
        rate = self.source.frame_rate if self.source else Fraction(25)
        self.span_table.setRowCount(len(self.spans))
        for row, span in enumerate(self.spans):
            texts = (str(span.start_frame), str(span.end_frame), str(span.length),
                     f"{format_time(span.start_frame, rate)} – {format_time(span.end_frame, rate)}")
            for column, text in enumerate(texts):
                self.span_table.setItem(row, column, QTableWidgetItem(text))
        if select is not None:
            self.select_span_at(select)
        self.timeline.spans = self.spans
        self.timeline.update()
        redacted = self.spans.frame_count
        self.state.setText(f"{len(self.spans)} span(s), {redacted} of {self.total} frames redacted"
                           + (" · edited: re-render to apply" if self.edited else ""))
        if self.source is not None and self.current >= 0:
            previous, self.current = self.current, -1
            self.show_frame(previous)

    def _span_selected(self) -> None:
        span = self.selected_span()
        self.timeline.selected = span
        self.timeline.update()
        if span is not None:
            self.start_box.setValue(span.start_frame)
            self.end_box.setValue(span.end_frame)

    def replace_selected_span(self, start: int, end: int) -> bool:
        """Give the selected span new bounds (frames; end exclusive); overlapping spans merge."""
        span = self.selected_span()
        if span is None or not 0 <= start < end <= self.total:
            return False
        others = [s for s in self.spans if s != span]
        self.spans = SegmentSet.of([*others, Segment(start, end)])
        self._spans_changed(select=start)
        return True

    def apply_span_boxes(self) -> None:
        if not self.replace_selected_span(self.start_box.value(), self.end_box.value()):
            self.state.setText("The first frame must come before the end frame; nothing changed.")

    def _set_edge(self, start: bool) -> None:
        span = self.selected_span()
        if span is None:
            return
        if start:
            self.replace_selected_span(self.current, span.end_frame)
        else:
            self.replace_selected_span(span.start_frame, self.current + 1)

    def add_span_at_playhead(self) -> None:
        if self.source is None:
            return
        length = max(1, round(self.source.frame_rate))     # one second, then adjust its edges
        end = min(self.total, self.current + length)
        self.spans = self.spans.union(SegmentSet.of([(self.current, end)]))
        self._spans_changed(select=self.current)

    def remove_selected_span(self) -> None:
        span = self.selected_span()
        if span is not None:
            self.spans = SegmentSet.of(s for s in self.spans if s != span)
            self._spans_changed()

    # --- decisions ----------------------------------------------------------------------------------
    def request_rerender(self) -> None:
        if self.entry is not None:
            self.stop_playing()
            self.rerender_pending = True
            self.set_controls_enabled(False)
            self.state.setText("Re-rendering with these spans… (see the Queue for progress)")
            self.rerender_requested.emit(self.entry.entry_id, self.spans)

    def mark_reviewed(self) -> None:
        if self.entry is None:
            return
        if self.edited:
            self.state.setText("The spans were edited: re-render first, then mark the case reviewed.")
            return
        self.reviewed.emit(self.entry.entry_id)
