"""Review a case: play and scrub the merged timeline, see and correct the out-of-body spans and the burned-in
text regions, re-render.

Spans are frames of the merged timeline (the unit of the pipeline's segments file), so a re-render
redacts exactly the frames shown here as redacted.  The screen shows a span as its first and last
redacted frame (both included) and times as mm:ss:ff.  Every edit is a :mod:`endoshare.timeline`
operation wrapped in one undoable command; the edit boxes always show the selected span.

Overlay regions (:mod:`endoshare.overlay.regions`, read from the archive) are drawn over the picture for the
frame shown: drag on the picture to add one (it covers the whole case until its edges are moved with
"Region from/to here"), drag a region to move it, its lower right corner to resize it, Delete to remove
it.  Each is an undoable edit on the same stack as the spans; a re-render masks exactly the regions shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QUndoCommand,
    QUndoStack,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
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
from ..overlay.regions import (
    OverlayRegion,
    OverlaySet,
    add_region,
    load_overlays_file,
    move_region,
    overlays_from_json,
    remove_region,
    replace_region,
    set_kind,
    shown_regions,
)
from ..overlay.text import Box
from ..pipeline import probe_case
from ..report import report_timeline_png
from ..storage import private_dir, write_atomically
from ..timeline import (
    Segment,
    SegmentSet,
    add_span,
    format_timecode,
    load_segments_file,
    next_span,
    previous_span,
    remove_span,
    replace_span,
    span_at,
)
from .case_builder import ScaledPixmapLabel, rgb_pixmap
from .frames import RGB, FrameSource, output_rgb
from .workers import TaskRunner

THUMBNAILS = 16
THUMBNAIL_WIDTH = 96
SPAN_COLOUR = QColor(220, 30, 40, 120)
MAX_ZOOM = 64
#: Edited spans not re-rendered yet, kept in the archive so that a crash of the app loses no edit.
REVIEW_DRAFTS_FOLDER = "review-drafts"


@dataclass(frozen=True)
class ReviewCase:
    """What the review screen needs to know about one finished case."""

    key: str                 # the queue's job id, as text
    case_id: str
    folder: Path
    output: Path | None
    report: Path | None
    redaction: str = "black"
    status: str = ""
    #: The archive's file of the overlay regions the output was masked with (private).
    overlays: Path | None = None


def format_time(frame: int, rate: Fraction) -> str:
    return format_timecode(max(0, frame), rate)


def load_plan(folder: Path, case_id: str) -> JoinPlan:
    """The merged timeline exactly as the pipeline builds it for this case."""
    return plan_join(probe_case(discover_case(folder, case_id)))


def report_spans(report: Path | None) -> SegmentSet:
    """The spans an output was redacted with, from its report (empty when there is no report)."""
    if report is None or not report.exists():
        return SegmentSet()
    data = json.loads(report.read_text(encoding="utf-8"))
    return SegmentSet.from_json(data.get("redaction", {}).get("spans", []))


def case_overlays(case: ReviewCase) -> OverlaySet:
    """The regions the output was masked with: the archive's file, else (outputs made before it was kept) the
    report's copy, else none."""
    if case.overlays is not None and case.overlays.is_file():
        return load_overlays_file(case.overlays)
    if case.report is not None and case.report.exists():
        data = json.loads(case.report.read_text(encoding="utf-8")).get("overlays")
        if isinstance(data, dict):
            return OverlaySet.from_json(data)
    return OverlaySet()


def thumbnail_strip(plan: JoinPlan, count: int = THUMBNAILS, width: int = THUMBNAIL_WIDTH) -> list[RGB]:
    total = plan.total_frames
    picks = sorted({min(total - 1, (2 * k + 1) * total // (2 * count)) for k in range(count)})
    with FrameSource(plan) as source:
        return [source.rgb(i, width) for i in picks]


class TimelineBar(QWidget):
    """Thumbnails across the case, the spans in red over them, and the playhead.

    Click or drag to move the playhead; a click inside a span also selects it.  ``zoom`` widens the bar
    (it sits in a scroll area); Ctrl + mouse wheel zooms around the pointer.
    """

    frame_chosen = Signal(int)
    span_clicked = Signal(object)       # the Segment under the click, or None
    zoom_requested = Signal(int)        # +1 / -1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.total = 0
        self.current = 0
        self.spans = SegmentSet()
        self.selected: Segment | None = None
        self.thumbnails: list[QPixmap] = []
        self.setMinimumHeight(72)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

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
            painter.setPen(QPen(QColor("#ffeb3b"), 3))
            painter.drawRect(QRect(left, 1, max(3, right - left), height - 3))
        if self.total:
            painter.setPen(QPen(QColor("#ffffff"), 2))
            x = self.x_of(self.current)
            painter.drawLine(x, 0, x, height)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        frame = self.frame_at(event.position().x())
        self.frame_chosen.emit(frame)
        self.span_clicked.emit(span_at(self.spans, frame))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.frame_chosen.emit(self.frame_at(event.position().x()))

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_requested.emit(1 if event.angleDelta().y() > 0 else -1)
            event.accept()
        else:
            super().wheelEvent(event)


class SpanEdit(QUndoCommand):
    """One edit of the spans: both sets and the span selected before and after, so undo restores exactly."""

    def __init__(self, view: ReviewView, text: str, after: SegmentSet, select_after: Segment | None) -> None:
        super().__init__(text)
        self.view = view
        self.before, self.select_before = view.spans, view.selected
        self.after, self.select_after = after, select_after

    def redo(self) -> None:
        self.view.set_spans(self.after, self.select_after)

    def undo(self) -> None:
        self.view.set_spans(self.before, self.select_before)


class OverlayEdit(QUndoCommand):
    """One edit of the overlay regions, with the region selected before and after."""

    def __init__(self, view: ReviewView, text: str, after: OverlaySet, select_after: OverlayRegion | None) -> None:
        super().__init__(text)
        self.view = view
        self.before, self.select_before = view.overlays, view.selected_region
        self.after, self.select_after = after, select_after

    def redo(self) -> None:
        self.view.set_overlays(self.after, self.select_after)

    def undo(self) -> None:
        self.view.set_overlays(self.before, self.select_before)


#: A drag shorter than this (screen pixels) is a click; the resize handle's size.
DRAG_PIXELS = 4
HANDLE_PIXELS = 10


class VideoLabel(ScaledPixmapLabel):
    """The picture, rescaled to the label whenever the window changes size, with the overlay regions of the
    frame shown drawn over it.  Mouse gestures become signals in picture pixels; the view edits."""

    region_drawn = Signal(object)            # Box: a new rectangle dragged on the picture
    region_moved = Signal(object, object)    # the OverlayRegion dragged, its new Box
    region_clicked = Signal(object)          # the OverlayRegion under a click, or None

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumSize(320, 180)
        self.picture_size: tuple[int, int] = (0, 0)
        self.regions: tuple[OverlayRegion, ...] = ()
        self.selected: OverlayRegion | None = None
        #: Fill masked regions (the output preview) or only outline them.
        self.fill_masked = False
        self.editable = False
        self._press: QPoint | None = None
        self._grab: tuple[OverlayRegion, str] | None = None     # region, "move" or "resize"
        self._rubber: QRect | None = None

    # picture pixels <-> widget pixels (the pixmap is scaled keeping its aspect and centred)
    def _frame(self) -> tuple[float, float, float]:
        width, height = self.picture_size
        area = self.contentsRect()
        if not width or not height:
            return 1.0, float(area.x()), float(area.y())
        scale = min(area.width() / width, area.height() / height)
        return scale, area.x() + (area.width() - width * scale) / 2, area.y() + (area.height() - height * scale) / 2

    def widget_rect(self, box: Box) -> QRect:
        scale, left, top = self._frame()
        return QRect(round(left + box.x0 * scale), round(top + box.y0 * scale), max(1, round(box.width * scale)),
                     max(1, round(box.height * scale)))

    def picture_point(self, point: QPoint) -> tuple[int, int]:
        scale, left, top = self._frame()
        width, height = self.picture_size
        return (max(0, min(width, round((point.x() - left) / scale))),
                max(0, min(height, round((point.y() - top) / scale))))

    def picture_box(self, a: QPoint, b: QPoint) -> Box | None:
        (x0, y0), (x1, y1) = self.picture_point(a), self.picture_point(b)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def region_at(self, point: QPoint) -> OverlayRegion | None:
        hits = [r for r in self.regions if self.widget_rect(r.box).contains(point)]
        return min(hits, key=lambda r: r.box.area) if hits else None

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self.picture_size[0] or self.pixmap().isNull():
            return
        painter = QPainter(self)
        for region in self.regions:
            rect = self.widget_rect(region.box)
            if region.masked and self.fill_masked:
                painter.fillRect(rect, QColor("#000000"))
            colour = QColor("#ffeb3b") if region == self.selected else \
                QColor("#00e5ff") if region.masked else QColor("#9e9e9e")
            pen = QPen(colour, 2, Qt.PenStyle.SolidLine if region.masked else Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawRect(rect)
            if region == self.selected:
                painter.fillRect(QRect(rect.right() - HANDLE_PIXELS + 1, rect.bottom() - HANDLE_PIXELS + 1,
                                       HANDLE_PIXELS, HANDLE_PIXELS), colour)
        if self._rubber is not None:
            painter.setPen(QPen(QColor("#ffeb3b"), 1, Qt.PenStyle.DashLine))
            painter.drawRect(self._rubber)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if not self.editable or event.button() != Qt.MouseButton.LeftButton:
            return
        point = event.position().toPoint()
        self._press = point
        region = self.region_at(point)
        self._grab = None
        if region is not None:
            rect = self.widget_rect(region.box)
            near_corner = (rect.right() - point.x() < HANDLE_PIXELS and rect.bottom() - point.y() < HANDLE_PIXELS)
            self._grab = (region, "resize" if near_corner else "move")
        self.region_clicked.emit(region)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None:
            return
        point = event.position().toPoint()
        if self._grab is None:
            self._rubber = QRect(self._press, point).normalized()
        else:
            region, how = self._grab
            rect = self.widget_rect(region.box)
            if how == "move":
                rect.translate(point - self._press)
            else:
                rect.setBottomRight(point)
            self._rubber = rect.normalized()
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        press, grab = self._press, self._grab
        self._press, self._grab, self._rubber = None, None, None
        self.update()
        if press is None:
            return
        point = event.position().toPoint()
        if (point - press).manhattanLength() < DRAG_PIXELS:
            return                                       # a click: selection only
        if grab is None:
            drawn = self.picture_box(press, point)
            if drawn is not None:
                self.region_drawn.emit(drawn)
            return
        region, how = grab
        if how == "move":
            scale, _left, _top = self._frame()
            width, height = self.picture_size
            dx = max(-region.box.x0, min(width - region.box.x1, round((point.x() - press.x()) / scale)))
            dy = max(-region.box.y0, min(height - region.box.y1, round((point.y() - press.y()) / scale)))
            box: Box | None = Box(region.box.x0 + dx, region.box.y0 + dy, region.box.x1 + dx, region.box.y1 + dy)
        else:
            x1, y1 = self.picture_point(point)
            box = Box(region.box.x0, region.box.y0, x1, y1) if x1 > region.box.x0 and y1 > region.box.y0 else None
        if box is not None and box != region.box:
            self.region_moved.emit(region, box)


class ReviewView(QWidget):
    rerender_requested = Signal(str, object, object)    # case key, SegmentSet, edited OverlaySet or None
    reviewed = Signal(str, object)              # case key, the final SegmentSet
    #: The case's timeline is ready (after the clips were read in a worker thread), or could not be read.
    loaded = Signal()
    load_failed = Signal(str)
    thumbnails_ready = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = TaskRunner(parent=self)
        self.case: ReviewCase | None = None
        #: A re-render of the shown case was asked for and has not finished yet.
        self.rerender_pending = False
        self.source: FrameSource | None = None
        #: The spans the output was rendered with, and the spans as edited now.
        self.saved_spans = SegmentSet()
        self.spans = SegmentSet()
        self.selected: Segment | None = None
        #: The overlay regions the output was masked with, and as edited now.
        self.saved_overlays = OverlaySet()
        self.overlays = OverlaySet()
        self.selected_region: OverlayRegion | None = None
        self.current = 0
        self.zoom = 1
        self.undo_stack = QUndoStack(self)
        #: Where edited, not yet re-rendered spans are kept (private, in the archive); None: nowhere.
        self.draft_folder: Path | None = None
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._next_frame)
        #: Asks the user; replaced in tests.  (title, text) → True for "yes".
        self.ask: Callable[[str, str], bool] = self._ask

        self.title = QLabel("Choose a finished case in the Queue and press Review…")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.video = VideoLabel()
        self.video.setStyleSheet("background: #101010;")
        self.video.setToolTip("Burned-in text regions: drag on the picture to add one, drag one to move it, its "
                              "lower right corner to resize it; Delete removes the selected one")
        self.video.region_drawn.connect(self.add_region)
        self.video.region_moved.connect(self.move_region_to)
        self.video.region_clicked.connect(self.select_region)
        self.frame_state = QLabel()
        self.output_preview = QCheckBox("Show the output (redacted frames as they will look)")
        self.output_preview.setChecked(True)
        self.output_preview.toggled.connect(lambda _on: self._redraw())
        self.timeline = TimelineBar()
        self.timeline.frame_chosen.connect(self.show_frame)
        self.timeline.span_clicked.connect(self._timeline_span_clicked)
        self.timeline.zoom_requested.connect(lambda step: self.set_zoom(self.zoom * (2 if step > 0 else 0.5)))
        self.timeline_area = QScrollArea()
        self.timeline_area.setWidget(self.timeline)
        self.timeline_area.setWidgetResizable(False)
        self.timeline_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.timeline_area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.timeline_area.setFixedHeight(96)
        self.zoom_in_button = QPushButton("Zoom +")
        self.zoom_in_button.clicked.connect(lambda: self.set_zoom(self.zoom * 2))
        self.zoom_out_button = QPushButton("Zoom −")
        self.zoom_out_button.clicked.connect(lambda: self.set_zoom(self.zoom // 2))

        self.play_button = QPushButton("Play")
        self.play_button.setToolTip("Space")
        self.play_button.clicked.connect(self.toggle_play)
        self.back_button = QPushButton("◀ 1 frame")
        self.back_button.setToolTip("← (Shift+←: one second)")
        self.back_button.clicked.connect(lambda: self.step(-1))
        self.forward_button = QPushButton("1 frame ▶")
        self.forward_button.setToolTip("→ (Shift+→: one second)")
        self.forward_button.clicked.connect(lambda: self.step(1))
        self.previous_button = QPushButton("« Previous span")
        self.previous_button.setToolTip("P")
        self.previous_button.clicked.connect(self.go_previous_span)
        self.next_button = QPushButton("Next span »")
        self.next_button.setToolTip("N")
        self.next_button.clicked.connect(self.go_next_span)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)   # the arrow keys step frames, not the slider
        self.slider.setSingleStep(1)
        self.slider.valueChanged.connect(self.show_frame)
        self.time_label = QLabel()
        self.time_label.setMinimumWidth(200)
        player = QHBoxLayout()
        for widget in (self.play_button, self.back_button, self.forward_button, self.previous_button,
                       self.next_button):
            player.addWidget(widget)
        player.addWidget(self.slider, 1)
        player.addWidget(self.time_label)

        self.span_table = QTableWidget(0, 3)
        self.span_table.setHorizontalHeaderLabels(["From (mm:ss:ff)", "To (mm:ss:ff)", "Length"])
        self.span_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.span_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.span_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.span_table.verticalHeader().hide()
        self.span_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.span_table.horizontalHeader().setStretchLastSection(True)
        self.span_table.itemSelectionChanged.connect(self._table_selection_changed)
        self.start_box = QSpinBox()
        self.end_box = QSpinBox()
        self.start_box.setToolTip("First hidden frame of the selected span")
        self.end_box.setToolTip("Last hidden frame of the selected span (it is hidden too)")
        self.box_times = QLabel()
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_span_boxes)
        self.add_button = QPushButton("Add span at playhead")
        self.add_button.clicked.connect(self.add_span_at_playhead)
        self.remove_button = QPushButton("Remove span…")
        self.remove_button.clicked.connect(self.remove_selected_span)
        self.start_here_button = QPushButton("Start here")
        self.start_here_button.setToolTip("The selected span starts at the playhead")
        self.start_here_button.clicked.connect(lambda: self._set_edge(start=True))
        self.end_here_button = QPushButton("End here")
        self.end_here_button.setToolTip("The selected span ends at the playhead (that frame is hidden too)")
        self.end_here_button.clicked.connect(lambda: self._set_edge(start=False))
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Ctrl+Z")
        self.undo_button.clicked.connect(self.undo_stack.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip("Ctrl+Shift+Z")
        self.redo_button.clicked.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self.undo_button.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redo_button.setEnabled)
        edit_row = QHBoxLayout()
        edit_row.addWidget(QLabel("Hidden from frame"))
        edit_row.addWidget(self.start_box)
        edit_row.addWidget(QLabel("to frame"))
        edit_row.addWidget(self.end_box)
        edit_row.addWidget(self.box_times)
        for button in (self.apply_button, self.start_here_button, self.end_here_button, self.add_button,
                       self.remove_button, self.undo_button, self.redo_button):
            edit_row.addWidget(button)
        edit_row.addStretch(1)

        self.region_state = QLabel()
        self.region_from_button = QPushButton("Region from here")
        self.region_from_button.setToolTip("The selected region is masked from the playhead on")
        self.region_from_button.clicked.connect(lambda: self._set_region_edge(start=True))
        self.region_to_button = QPushButton("Region to here")
        self.region_to_button.setToolTip("The selected region is masked up to the playhead (that frame too)")
        self.region_to_button.clicked.connect(lambda: self._set_region_edge(start=False))
        self.mask_region_button = QPushButton("Mask region")
        self.mask_region_button.setToolTip("Mask the selected region, left visible until now (moving text, "
                                           "device settings)")
        self.mask_region_button.clicked.connect(self.mask_selected_region)
        self.remove_region_button = QPushButton("Remove region…")
        self.remove_region_button.setToolTip("Delete")
        self.remove_region_button.clicked.connect(self.remove_selected_region)
        region_row = QHBoxLayout()
        region_row.addWidget(self.region_state, 1)
        for button in (self.region_from_button, self.region_to_button, self.mask_region_button,
                       self.remove_region_button):
            region_row.addWidget(button)

        self.state = QLabel()
        self.state.setWordWrap(True)
        self.rerender_button = QPushButton("Re-render with these spans")
        self.rerender_button.clicked.connect(self.request_rerender)
        self.reviewed_button = QPushButton("Mark reviewed")
        self.reviewed_button.clicked.connect(self.mark_reviewed)
        bottom = QHBoxLayout()
        bottom.addWidget(self.state, 1)
        bottom.addWidget(self.rerender_button)
        bottom.addWidget(self.reviewed_button)

        self.picture = QLabel()
        self.picture.setScaledContents(False)
        top = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self.video, 1)
        left.addWidget(self.output_preview)
        top.addLayout(left, 3)
        side = QVBoxLayout()
        side.addWidget(QLabel("Out-of-body spans (hidden in the output):"))
        side.addWidget(self.span_table, 1)
        side.addWidget(self.picture)
        top.addLayout(side, 2)
        zoom_row = QHBoxLayout()
        zoom_row.addWidget(self.timeline_area, 1)
        zoom_column = QVBoxLayout()
        zoom_column.addWidget(self.zoom_in_button)
        zoom_column.addWidget(self.zoom_out_button)
        zoom_row.addLayout(zoom_column)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(top, 1)
        layout.addWidget(self.frame_state)
        layout.addLayout(zoom_row)
        layout.addLayout(player)
        layout.addLayout(edit_row)
        layout.addLayout(region_row)
        layout.addLayout(bottom)
        self._add_shortcuts()
        self.set_controls_enabled(False)

    def _add_shortcuts(self) -> None:
        def add(keys: QKeySequence | str | QKeySequence.StandardKey, slot: Callable[[], None]) -> QAction:
            action = QAction(self)
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(slot)
            self.addAction(action)
            return action

        self.shortcuts = {
            "play": add("Space", self.toggle_play),
            "back": add("Left", lambda: self.step(-1)),
            "forward": add("Right", lambda: self.step(1)),
            "back_second": add("Shift+Left", lambda: self.step(-self.frames_per_second())),
            "forward_second": add("Shift+Right", lambda: self.step(self.frames_per_second())),
            "next_span": add("N", self.go_next_span),
            "previous_span": add("P", self.go_previous_span),
            "undo": add(QKeySequence.StandardKey.Undo, self.undo_stack.undo),
            "redo": add("Ctrl+Shift+Z", self.undo_stack.redo),
            "remove_region": add(QKeySequence.StandardKey.Delete, self.remove_selected_region),
        }

    # --- loading ------------------------------------------------------------------------------------
    @property
    def edited(self) -> bool:
        """The spans or regions differ from those the output was rendered with (not re-rendered yet)."""
        return self.case is not None and (self.spans != self.saved_spans or self.overlays != self.saved_overlays)

    def confirm_discard(self) -> bool:
        """True when there are no unsaved edits, or the user chose to discard them."""
        if not self.edited or self.case is None:
            return True
        if self.ask("Discard your edits?",
                    f"The spans or regions of case {self.case.case_id} were edited but not re-rendered. "
                    "Discard the edits? (Choose No, then press “Re-render with these spans” to keep them.)"):
            self.drop_draft()
            return True
        return False

    def open_case(self, case: ReviewCase) -> None:
        """Show ``case`` from scratch: its spans, no selection, an empty undo history."""
        self.reset()
        self.case = case
        try:
            self.saved_spans = report_spans(case.report)
            self.saved_overlays = case_overlays(case)
        except (OSError, ValueError) as exc:
            self.title.setText(f"Cannot read the report of case {case.case_id}: {exc}")
            self.load_failed.emit(f"Cannot read the report of case {case.case_id}: {exc}")
            self.case = None
            return
        self.spans = self.saved_spans
        self.overlays = self.saved_overlays
        self.title.setText(f"Reading case {case.case_id}…")
        self._show_picture(case.report)
        self.tasks.run(partial(load_plan, case.folder, case.case_id), partial(self._plan_ready, key=case.key),
                       self._plan_failed)

    def _show_picture(self, report: Path | None) -> None:
        """The report's timeline picture (the one published beside the report at review)."""
        if report is None or not report.exists():
            return
        try:
            png = report_timeline_png(json.loads(report.read_text(encoding="utf-8")), width=420)
        except (OSError, ValueError, KeyError):
            return
        pixmap = QPixmap()
        pixmap.loadFromData(png, "PNG")
        self.picture.setPixmap(pixmap)
        self.picture.setToolTip("The case's timeline as rendered: hidden spans in red, a tick every 10 s")

    def reset(self, message: str = "Choose a finished case in the Queue and press Review…") -> None:
        """Nothing open: no case, no spans, no selection, no undo history."""
        self.stop_playing()
        self._close_source()
        self.case = None
        self.rerender_pending = False
        self.undo_stack.clear()
        self.saved_spans = self.spans = SegmentSet()
        self.selected = None
        self.saved_overlays = self.overlays = OverlaySet()
        self.selected_region = None
        self.video.picture_size = (0, 0)
        self.video.regions = ()
        self.video.selected = None
        self.current = 0
        self.zoom = 1
        self.timeline.total = 0
        self.timeline.thumbnails = []
        self.picture.clear()
        self.video.show_pixmap(None)
        self.frame_state.clear()
        self.time_label.clear()
        self.title.setText(message)
        self.set_controls_enabled(False)
        self._show_spans()

    def close_case(self, message: str) -> None:
        """The open case went away (removed from the queue): say so and show nothing."""
        self.reset(message)
        self.state.setText(message)

    def _plan_ready(self, plan: JoinPlan, key: str) -> None:
        if self.case is None or self.case.key != key:
            return                       # another case was opened meanwhile
        case = self.case
        self.source = FrameSource(plan)
        total = plan.total_frames
        self.saved_spans = self.saved_spans.clipped(total)
        self.spans = self.saved_spans
        self.video.picture_size = (plan.target.width, plan.target.height)
        for widget in (self.slider, self.start_box, self.end_box):
            widget.blockSignals(True)
            widget.setRange(0, total - 1)
            widget.blockSignals(False)
        rate = plan.target.frame_rate
        self.slider.setPageStep(self.frames_per_second())
        self.timeline.total = total
        self.timer.setInterval(max(1, round(1000 / float(rate))))
        output = str(case.output) if case.output else "-"
        self.title.setText(
            f"<b>Patient {case.case_id}</b> · {format_time(total, rate)} ({total} frames at {float(rate):.3g} "
            f"fps) · {case.status}<br>Output: {output}")
        self.set_controls_enabled(True)
        self.set_zoom(1)
        self._show_spans()
        self.current = -1
        self.show_frame(0)
        self._restore_draft()
        self.tasks.run(partial(thumbnail_strip, plan), partial(self._thumbnails_ready, key=key), lambda _text: None)
        self.loaded.emit()

    def _plan_failed(self, message: str) -> None:
        self.title.setText(f"Cannot review this case: {message}")
        self.load_failed.emit(message)

    def _thumbnails_ready(self, images: list[RGB], key: str) -> None:
        if self.case is None or self.case.key != key:
            return
        self.timeline.thumbnails = [rgb_pixmap(rgb) for rgb in images]
        self.timeline.update()
        self.thumbnails_ready.emit()

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def set_controls_enabled(self, enabled: bool) -> None:
        for widget in (self.play_button, self.back_button, self.forward_button, self.previous_button,
                       self.next_button, self.slider, self.span_table, self.add_button, self.rerender_button,
                       self.reviewed_button, self.output_preview, self.zoom_in_button, self.zoom_out_button):
            widget.setEnabled(enabled)
        for action in getattr(self, "shortcuts", {}).values():
            action.setEnabled(enabled)
        self._update_edit_controls()

    def _update_edit_controls(self) -> None:
        usable = self.source is not None and not self.rerender_pending
        has_span = usable and self.selected is not None
        for widget in (self.start_box, self.end_box, self.apply_button, self.remove_button,
                       self.start_here_button, self.end_here_button):
            widget.setEnabled(has_span)
        has_region = usable and self.selected_region is not None
        for widget in (self.region_from_button, self.region_to_button, self.remove_region_button):
            widget.setEnabled(has_region)
        self.mask_region_button.setEnabled(has_region and self.selected_region is not None
                                           and not self.selected_region.masked)
        self.video.editable = usable
        self.undo_button.setEnabled(usable and self.undo_stack.canUndo())
        self.redo_button.setEnabled(usable and self.undo_stack.canRedo())

    # --- player -------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.source.total_frames if self.source else 0

    def frames_per_second(self) -> int:
        return max(1, round(self.source.frame_rate)) if self.source else 1

    def step(self, frames: int) -> None:
        self.stop_playing()
        self.show_frame(self.current + frames)

    def show_frame(self, index: int) -> None:
        if self.source is None:
            return
        index = max(0, min(self.total - 1, index))
        if index == self.current:
            return
        self.current = index
        self._redraw()

    def _redraw(self) -> None:
        if self.source is None or self.case is None:
            return
        index = self.current
        redacted = self.spans.contains(index)
        try:
            if self.output_preview.isChecked():
                rgb = output_rgb(self.source, index, self.case.redaction, redacted)
            else:
                rgb = self.source.rgb(index)
        except EndoshareError as exc:
            self.stop_playing()
            self.frame_state.setText(str(exc))
            return
        if rgb is None:        # "cut": the frame is not in the output at all
            self.video.show_pixmap(None)
            self.video.setText("This frame is cut from the output")
        else:
            self.video.show_pixmap(rgb_pixmap(rgb))
        self.video.regions = shown_regions(self.overlays, index)
        self.video.selected = self.selected_region
        self.video.fill_masked = self.output_preview.isChecked()
        self.video.update()
        border = "#dc1e28" if redacted else "#101010"
        self.video.setStyleSheet(f"background: #101010; color: white; border: 4px solid {border};")
        rate = self.source.frame_rate
        self.frame_state.setText(f"{format_time(index, rate)} (frame {index}): "
                                 + ("HIDDEN in the output" if redacted else "shown in the output"))
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.time_label.setText(f"{format_time(index, rate)} / {format_time(self.total, rate)}")
        self.timeline.current = index
        self.timeline.update()
        self._keep_playhead_visible()

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

    # --- timeline zoom ------------------------------------------------------------------------------
    def set_zoom(self, zoom: float) -> None:
        self.zoom = max(1, min(MAX_ZOOM, int(zoom)))
        self._layout_timeline()
        self.zoom_in_button.setEnabled(self.source is not None and self.zoom < MAX_ZOOM)
        self.zoom_out_button.setEnabled(self.source is not None and self.zoom > 1)

    def _layout_timeline(self) -> None:
        viewport = self.timeline_area.viewport().width()
        self.timeline.resize(max(1, viewport * self.zoom), self.timeline_area.viewport().height())
        self._keep_playhead_visible()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._layout_timeline()

    def _keep_playhead_visible(self) -> None:
        if self.zoom > 1:
            self.timeline_area.ensureVisible(self.timeline.x_of(self.current), 10, 60, 0)

    # --- spans: showing -----------------------------------------------------------------------------
    def set_spans(self, spans: SegmentSet, select: Segment | None) -> None:
        """Show ``spans`` with ``select`` selected (None, or a span not in the set: no selection)."""
        self.spans = spans
        self.selected = select if select is not None and select in spans.segments else None
        self._save_draft()
        self._show_spans()
        self._redraw()

    # --- drafts: edits survive a crash of the app ----------------------------------------------------
    def _draft_path(self) -> Path | None:
        if self.draft_folder is None or self.case is None:
            return None
        return self.draft_folder / f"job-{self.case.key}.json"

    def _save_draft(self) -> None:
        """Keep edited, not re-rendered spans in the private archive; drop the draft when there is none."""
        path = self._draft_path()
        if path is None:
            return
        try:
            if self.edited:
                private_dir(path.parent)
                write_atomically(path, json.dumps({"segments": self.spans.to_json(),
                                                   "overlays": self.overlays.to_json()}).encode("utf-8"))
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            self.state.setText(f"Your edits could not be kept in the archive ({exc}); re-render soon.")

    def drop_draft(self) -> None:
        path = self._draft_path()
        if path is not None:
            path.unlink(missing_ok=True)

    def _restore_draft(self) -> None:
        """Edits left by an earlier session (the app was closed or crashed) come back as one undoable edit."""
        path = self._draft_path()
        if path is None or not path.is_file():
            return
        try:
            spans = load_segments_file(path).clipped(self.total)
            data = json.loads(path.read_text(encoding="utf-8")).get("overlays")
            overlays = self.overlays if data is None else overlays_from_json(
                data, path, self.video.picture_size[0], self.video.picture_size[1], self.total)
        except (EndoshareError, OSError, ValueError):
            return
        if spans != self.spans or overlays != self.overlays:
            self.undo_stack.beginMacro("restore unsaved edits")
            self._edit("restore unsaved spans", spans, None)
            self._edit_overlays("restore unsaved regions", overlays, None)
            self.undo_stack.endMacro()
            self.state.setText(self.state.text() + " · unsaved edits from an earlier session were restored "
                               "(Ctrl+Z drops them)")

    def _show_spans(self) -> None:
        rate = self.source.frame_rate if self.source else Fraction(25)
        table = self.span_table
        table.blockSignals(True)
        table.setRowCount(len(self.spans))
        for row, span in enumerate(self.spans):
            texts = (format_time(span.start_frame, rate), format_time(span.end_frame - 1, rate),
                     f"{format_time(span.length, rate)} ({span.length} frames)")
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                item.setToolTip(f"frames {span.start_frame} to {span.end_frame - 1}")
                table.setItem(row, column, item)
        table.clearSelection()
        if self.selected is not None:
            row = self.spans.segments.index(self.selected)
            table.selectRow(row)
            first = table.item(row, 0)
            if first is not None:
                table.scrollToItem(first)
        table.blockSignals(False)
        self._show_selected_in_boxes()
        self.timeline.spans = self.spans
        self.timeline.selected = self.selected
        self.timeline.update()
        if self.case is None:
            self.state.clear()
            return
        edited = " · edited, not re-rendered yet" if self.edited else ""
        self.state.setText(f"{len(self.spans)} span(s), {self.spans.frame_count} of {self.total} frames hidden"
                           + edited)

    def _show_selected_in_boxes(self) -> None:
        span = self.selected
        for box in (self.start_box, self.end_box):
            box.blockSignals(True)
        if span is None:
            self.start_box.clear()
            self.end_box.clear()
            self.box_times.clear()
        else:
            self.start_box.setValue(span.start_frame)
            self.end_box.setValue(span.end_frame - 1)
            rate = self.source.frame_rate if self.source else Fraction(25)
            self.box_times.setText(f"({format_time(span.start_frame, rate)} – {format_time(span.end_frame - 1, rate)})")
        for box in (self.start_box, self.end_box):
            box.blockSignals(False)
        self._update_edit_controls()

    def select(self, span: Segment | None, jump: bool = True) -> None:
        """Select ``span`` (in the table, the boxes and the timeline) and move the playhead to its start."""
        self.selected = span if span is not None and span in self.spans.segments else None
        self._show_spans()
        if jump and self.selected is not None:
            self.stop_playing()
            self.show_frame(self.selected.start_frame)

    def selected_span(self) -> Segment | None:
        return self.selected

    def _table_selection_changed(self) -> None:
        rows = self.span_table.selectionModel().selectedRows()
        row = rows[0].row() if rows else None
        self.select(self.spans.segments[row] if row is not None and row < len(self.spans) else None)

    def _timeline_span_clicked(self, span: Segment | None) -> None:
        self.select(span, jump=False)

    def go_next_span(self) -> None:
        span = next_span(self.spans, self.current)
        if span is not None:
            self.select(span)

    def go_previous_span(self) -> None:
        span = previous_span(self.spans, self.current)
        if span is not None:
            self.select(span)

    # --- spans: editing (each one undoable command) -------------------------------------------------
    def _edit(self, text: str, after: SegmentSet, select: Segment | None) -> None:
        if after != self.spans:
            self.undo_stack.push(SpanEdit(self, text, after, select))

    def _replace_selected(self, new: Segment, text: str) -> bool:
        old = self.selected
        if old is None:
            return False
        after = replace_span(self.spans, old, new)
        self._edit(text, after, span_at(after, new.start_frame))
        return True

    def replace_selected_span(self, first: int, last: int) -> bool:
        """Hide frames ``first``..``last`` (both included) instead of the selected span; neighbours merge."""
        if self.selected is None or not 0 <= first <= last < self.total:
            return False
        return self._replace_selected(Segment(first, last + 1), "change span")

    def apply_span_boxes(self) -> None:
        if not self.replace_selected_span(self.start_box.value(), self.end_box.value()):
            self.state.setText("The first hidden frame must not come after the last one; nothing changed.")

    def _set_edge(self, start: bool) -> None:
        span = self.selected
        if span is None:
            return
        if start and self.current < span.end_frame:
            self._replace_selected(Segment(self.current, span.end_frame), "move span start")
        elif not start and self.current >= span.start_frame:
            self._replace_selected(Segment(span.start_frame, self.current + 1), "move span end")
        else:
            self.state.setText("The playhead is on the wrong side of the selected span: a span must start before "
                               "it ends. Nothing changed.")

    def add_span_at_playhead(self) -> None:
        if self.source is None:
            return
        end = min(self.total, self.current + self.frames_per_second())   # one second, then adjust its edges
        after = add_span(self.spans, Segment(self.current, end))
        self._edit("add span", after, span_at(after, self.current))

    def remove_selected_span(self) -> None:
        span = self.selected
        if span is None or self.source is None:
            return
        rate = self.source.frame_rate
        if not self.ask("Remove this span?",
                        f"Show frames {format_time(span.start_frame, rate)} to {format_time(span.end_frame - 1, rate)} "
                        f"({span.length} frames) in the output? They are hidden now as out-of-body. "
                        "(Ctrl+Z undoes it.)"):
            return
        self._edit("remove span", remove_span(self.spans, span), None)

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # --- decisions ----------------------------------------------------------------------------------
    def request_rerender(self) -> None:
        if self.case is not None and self.source is not None:
            self.stop_playing()
            self.rerender_pending = True
            self.set_controls_enabled(False)
            self.state.setText("Re-rendering with these spans… (see the Queue for progress)")
            overlays = self.overlays if self.overlays != self.saved_overlays else None
            self.rerender_requested.emit(self.case.key, self.spans, overlays)
            self.drop_draft()           # the spans are in the archive's reviewed-spans file now

    def rerender_finished(self, case: ReviewCase | None, message: str = "") -> None:
        """The re-render asked for here ended: show the new output, or say why not."""
        self.rerender_pending = False
        if case is not None:
            self.open_case(case)
        else:
            self.state.setText(message)
            self.set_controls_enabled(self.source is not None)

    def mark_reviewed(self) -> None:
        if self.case is None:
            return
        if self.edited:
            self.state.setText("The spans or regions were edited: re-render first, then mark the case reviewed.")
            return
        self.reviewed.emit(self.case.key, self.spans)

    # --- overlay regions (burned-in text): showing and editing, each edit one undoable command ------------
    def set_overlays(self, overlays: OverlaySet, select: OverlayRegion | None) -> None:
        """Show ``overlays`` with ``select`` selected (None, or a region not in the set: no selection)."""
        self.overlays = overlays
        self.selected_region = select if select is not None and select in overlays.regions else None
        self._save_draft()
        self._show_region_state()
        self._show_spans()
        self._redraw()

    def _show_region_state(self) -> None:
        region = self.selected_region
        count = f"{len(self.overlays.masked)} masked text region(s)"
        if region is None:
            self.region_state.setText(f"{count}; drag on the picture to add one")
        else:
            box, rate = region.box, self.source.frame_rate if self.source else Fraction(25)
            shown = "masked" if region.masked else "left visible"
            self.region_state.setText(
                f"{count} · selected: {box.width}x{box.height} px at ({box.x0}, {box.y0}), "
                f"{format_time(region.start_frame, rate)} – {format_time(region.end_frame - 1, rate)}, "
                f"{region.kind}, {shown}")
        self._update_edit_controls()

    def select_region(self, region: OverlayRegion | None) -> None:
        self.selected_region = region if region is not None and region in self.overlays.regions else None
        self._show_region_state()
        self._redraw()

    def _edit_overlays(self, text: str, after: OverlaySet, select: OverlayRegion | None) -> None:
        if after != self.overlays:
            self.undo_stack.push(OverlayEdit(self, text, after, select))

    def _picture(self) -> tuple[int, int, int]:
        width, height = self.video.picture_size
        return width, height, self.total

    def add_region(self, box: Box) -> None:
        """Mask ``box`` (picture pixels) in every frame of the case: when in doubt, mask; move its edges after."""
        if self.source is None or self.rerender_pending:
            return
        new = OverlayRegion(box, 0, self.total, "manual")
        try:
            after = add_region(self.overlays, new, *self._picture())
        except ValueError as exc:
            self.state.setText(f"The region was not added: {exc}.")
            return
        self._edit_overlays("add region", after, new)

    def _replace_region(self, old: OverlayRegion, new: OverlayRegion, text: str) -> None:
        try:
            after = replace_region(self.overlays, old, new, *self._picture())
        except ValueError as exc:
            self.state.setText(f"The region was not changed: {exc}.")
            return
        self._edit_overlays(text, after, new)

    def move_region_to(self, region: OverlayRegion, box: Box) -> None:
        if self.source is not None and not self.rerender_pending and region in self.overlays.regions:
            self._replace_region(region, move_region(region, box=box), "move region")

    def _set_region_edge(self, start: bool) -> None:
        region = self.selected_region
        if region is None:
            return
        if start and self.current < region.end_frame:
            self._replace_region(region, move_region(region, start_frame=self.current), "move region start")
        elif not start and self.current >= region.start_frame:
            self._replace_region(region, move_region(region, end_frame=self.current + 1), "move region end")
        else:
            self.state.setText("The playhead is on the wrong side of the selected region: a region must start "
                               "before it ends. Nothing changed.")

    def remove_selected_region(self) -> None:
        region = self.selected_region
        if region is None or self.source is None or self.rerender_pending:
            return
        if region.masked and not self.ask(
                "Remove this region?",
                f"Leave the picture at ({region.box.x0}, {region.box.y0})–({region.box.x1}, {region.box.y1}) "
                "visible in the output? It is masked now as burned-in text. (Ctrl+Z undoes it.)"):
            return
        self._edit_overlays("remove region", remove_region(self.overlays, region), None)

    def mask_selected_region(self) -> None:
        """Mask a region that was left visible; it becomes the user's ("manual")."""
        region = self.selected_region
        if region is not None and not region.masked and self.source is not None and not self.rerender_pending:
            self._replace_region(region, set_kind(region, "manual"), "mask region")
