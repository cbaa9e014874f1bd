"""Build a case: patient ID, the clips in recording order, a preview, and a warning when they differ."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..cases import VIDEO_EXTENSIONS, discover_case
from ..errors import EndoshareError
from ..media.join import plan_join
from ..media.probe import MediaInfo, probe
from .frames import RGB, clip_thumbnail
from .settings import GuiSettings
from .staging import needs_staging, stage_case
from .workers import TaskRunner, plain

PATH_ROLE = 256          # Qt.UserRole
INFO_ROLE = 257


def rgb_pixmap(rgb: RGB) -> QPixmap:
    height, width, _ = rgb.shape
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())     # copy: the numpy buffer goes away


def describe(info: MediaInfo) -> str:
    video = info.video
    seconds = info.duration_seconds or 0.0
    minutes, rest = divmod(seconds, 60)
    rate = f" @ {float(video.frame_rate):.3g} fps" if video.frame_rate else ""
    return f"{info.path.name} — {int(minutes)}:{rest:05.2f} — {video.width}×{video.height}{rate}"


def probe_clip(path: Path) -> MediaInfo | str:
    """The clip's facts, or the reason it cannot be used (shown in the list)."""
    try:
        info = probe(path)
        # Reading .video raises the NoVideoStreamError that names the file (e.g. an audio recording).
        info.video  # noqa: B018
    except (EndoshareError, OSError) as exc:
        return plain(str(exc))
    return info


class ScaledPixmapLabel(QLabel):
    """A label whose picture is scaled to the label, again whenever the window changes size."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self._pixmap: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def show_pixmap(self, pixmap: QPixmap | None) -> None:
        self._pixmap = pixmap
        self._rescale()

    def sizeHint(self) -> QSize:
        # Not the shown pixmap's size: the label follows the window, never the other way round.
        return QSize(320, 180)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 90)

    def clear(self) -> None:
        self._pixmap = None
        super().clear()

    def _rescale(self) -> None:
        if self._pixmap is None:
            super().clear()
            return
        self.setPixmap(self._pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()


def _head_digest(path: Path, size: int = 1 << 20) -> str:
    """SHA-256 of the first MiB: with the file size, enough to tell the same recording copied twice."""
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()


class CaseBuilder(QWidget):
    #: patient ID, case folder (as the pipeline will read it), clip names in order
    case_confirmed = Signal(str, object, object)
    #: Emitted when probing or a thumbnail finished (lets tests and screenshots wait for it).
    clips_changed = Signal()
    thumbnail_shown = Signal()

    def __init__(self, settings: Callable[[], GuiSettings], is_queued: Callable[[str], bool] = lambda _id: False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.is_queued = is_queued
        self.tasks = TaskRunner(parent=self)
        self.folder: Path | None = None
        self._probing = 0

        self.patient_id = QLineEdit()
        self.patient_id.setPlaceholderText("e.g. the hospital's case or patient number")
        self.folder_edit = QLineEdit()
        self.folder_edit.setReadOnly(True)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse_button)

        self.clips = QListWidget()
        self.clips.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.clips.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.clips.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.clips.currentItemChanged.connect(lambda *_: self._show_thumbnail())
        self.clips.model().rowsMoved.connect(lambda *_: self._clips_edited())
        self.add_button = QPushButton("Add clips…")
        self.remove_button = QPushButton("Remove")
        self.up_button = QPushButton("Move up")
        self.down_button = QPushButton("Move down")
        self.add_button.clicked.connect(self._add_dialog)
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        clip_buttons = QVBoxLayout()
        for button in (self.add_button, self.remove_button, self.up_button, self.down_button):
            clip_buttons.addWidget(button)
        clip_buttons.addStretch(1)

        self.preview = ScaledPixmapLabel("Select a clip to see a frame of it")
        self.preview.setMinimumSize(260, 160)
        self.preview.setStyleSheet("background: #202020; color: #cccccc;")
        clip_row = QHBoxLayout()
        clip_row.addWidget(self.clips, 1)
        clip_row.addLayout(clip_buttons)
        clip_row.addWidget(self.preview, 1)

        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("background: #fff3c4; color: #5d4037; padding: 6px;")
        # Long messages scroll inside a box of bounded height: the clip list keeps its room.
        self.warning_area = QScrollArea()
        self.warning_area.setWidget(self.warning)
        self.warning_area.setWidgetResizable(True)
        self.warning_area.setMaximumHeight(110)
        self.warning_area.setFrameShape(QScrollArea.Shape.NoFrame)
        self.warning_area.hide()
        self.warning.hide()
        self.confirm_button = QPushButton("Add case to queue")
        self.confirm_button.setDefault(True)
        self.confirm_button.clicked.connect(self.confirm)
        self.patient_id.textChanged.connect(lambda *_: self._update_state())

        form = QFormLayout()
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Case folder", folder_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Clips, in recording order (drag to reorder):"))
        layout.addLayout(clip_row, 1)
        layout.addWidget(self.warning_area)
        layout.addWidget(self.confirm_button, 0, Qt.AlignmentFlag.AlignRight)
        self._update_state()

    def _show_warning(self, visible: bool) -> None:
        self.warning.setVisible(visible)
        self.warning_area.setVisible(visible)

    # --- reading clips ------------------------------------------------------------------------------
    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Case folder (the clips of one operation)")
        if chosen:
            self.load_folder(Path(chosen))

    def _add_dialog(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(VIDEO_EXTENSIONS))
        chosen, _ = QFileDialog.getOpenFileNames(self, "Add clips", str(self.folder or ""),
                                                 f"Videos ({patterns});;All files (*)")
        self.add_clips([Path(p) for p in chosen])

    def load_folder(self, folder: Path) -> None:
        """Show the clips the pipeline would find in ``folder``, in its order."""
        self.clips.clear()
        self.folder = folder
        self.folder_edit.setText(str(folder))
        # The patient ID is never guessed from the folder name: a wrong guess would file the case under
        # another patient's pseudonym.
        try:
            paths = list(discover_case(folder).clips)
        except EndoshareError as exc:
            self.warning.setText(str(exc))
            self._show_warning(True)
            self._update_state()
            return
        self.add_clips(paths)

    def add_clips(self, paths: list[Path]) -> None:
        for path in paths:
            item = QListWidgetItem(f"{path.name} — reading…")
            item.setData(PATH_ROLE, str(path))
            self.clips.addItem(item)
            self._probing += 1
            self.tasks.run(partial(probe_clip, path), partial(self._probed, item), partial(self._probed, item))
        self._update_state()
        if self.clips.currentItem() is None and self.clips.count():
            self.clips.setCurrentRow(0)

    def _probed(self, item: QListWidgetItem, value: MediaInfo | str) -> None:
        self._probing -= 1
        if self.clips.row(item) < 0:
            return            # removed while it was being read
        if isinstance(value, MediaInfo):
            item.setText(describe(value))
            item.setData(INFO_ROLE, value)
            item.setToolTip(str(value.path))
        else:
            item.setText(f"⚠ {Path(item.data(PATH_ROLE)).name} — cannot be used")
            item.setData(INFO_ROLE, value)
            item.setForeground(QColor("#b00020"))
            item.setToolTip(value)
        self._clips_edited()

    @property
    def busy(self) -> bool:
        return self._probing > 0

    # --- editing ------------------------------------------------------------------------------------
    def clip_paths(self) -> list[Path]:
        return [Path(self.clips.item(row).data(PATH_ROLE)) for row in range(self.clips.count())]

    def remove_selected(self) -> None:
        row = self.clips.currentRow()
        if row >= 0:
            self.clips.takeItem(row)
            self._clips_edited()

    def move_selected(self, step: int) -> None:
        row = self.clips.currentRow()
        target = row + step
        if row < 0 or not 0 <= target < self.clips.count():
            return
        item = self.clips.takeItem(row)
        self.clips.insertItem(target, item)
        self.clips.setCurrentRow(target)
        self._clips_edited()

    def _clips_edited(self) -> None:
        problems = self.problems()
        self.warning.setText("\n".join(problems))
        self._show_warning(bool(problems))
        self._update_state()
        self.clips_changed.emit()

    def problems(self) -> list[str]:
        """What the user should know before confirming: unusable clips, clips that do not match."""
        infos = [self.clips.item(row).data(INFO_ROLE) for row in range(self.clips.count())]
        broken = [text for text in infos if isinstance(text, str)]
        if broken:
            return ["Remove the clips marked ⚠ before adding the case:", *broken]
        ready = [info for info in infos if isinstance(info, MediaInfo)]
        if len(ready) < 2 or len(ready) != len(infos):
            return []
        # Differing parameter sets or hidden frames are technicalities the report explains; a person
        # needs to hear about what they can see: size, rate, pixel format and codec.
        reasons = [str(m) for m in plan_join(ready).mismatches if m.kind.visible]
        notes = self.origin_problems()
        if reasons:
            notes += ["These clips do not match; the case will be re-encoded to the first clip's format (slower):",
                      *reasons]
        return notes

    def origin_problems(self) -> list[str]:
        """Clips listed twice (the same file, or the same content under two names) and clips from another
        folder than the case folder (possibly another patient's)."""
        notes = []
        seen: dict[tuple[int, str], Path] = {}
        for path in self.clip_paths():
            try:
                key = (path.stat().st_size, _head_digest(path))
            except OSError:
                continue
            if key in seen:
                notes.append(f"⚠ {path.name} is the same recording as {seen[key].name}: remove one of them.")
            else:
                seen[key] = path
        if self.folder is not None:
            home = self.folder.resolve()
            strangers = [p for p in self.clip_paths() if p.resolve().parent != home]
            if strangers:
                notes.append(f"⚠ Not from the case folder {self.folder}: "
                             + ", ".join(str(p) for p in strangers)
                             + ". Check that they belong to this patient.")
        return notes

    def _update_state(self) -> None:
        has_item = self.clips.currentRow() >= 0
        for button in (self.remove_button, self.up_button, self.down_button):
            button.setEnabled(has_item)
        infos = [self.clips.item(row).data(INFO_ROLE) for row in range(self.clips.count())]
        self.confirm_button.setEnabled(
            bool(self.patient_id.text().strip()) and bool(infos)
            and all(isinstance(info, MediaInfo) for info in infos))

    # --- preview ------------------------------------------------------------------------------------
    def _show_thumbnail(self) -> None:
        self._update_state()
        # PySide6's stubs say never None, but Qt returns None when no row is current.
        item: QListWidgetItem | None = self.clips.currentItem()
        if item is None:
            return
        path = Path(item.data(PATH_ROLE))
        self.tasks.run(lambda: clip_thumbnail(path, 1.0, 320), self._thumbnail_ready, self._thumbnail_failed)

    def _thumbnail_ready(self, rgb: RGB) -> None:
        pixmap = rgb_pixmap(rgb)
        self.preview.show_pixmap(pixmap)
        self.thumbnail_shown.emit()

    def _thumbnail_failed(self, message: str) -> None:
        self.preview.setText(message)
        self.thumbnail_shown.emit()

    # --- confirm ------------------------------------------------------------------------------------
    def confirm(self) -> bool:
        """Hand the case to the queue (staging it when the list differs from the folder's own order)."""
        if not self.confirm_button.isEnabled():
            return False
        case_id = self.patient_id.text().strip()
        if self.is_queued(case_id):
            # One patient ID keeps one pseudonym, so two runs at once would write the same output file.
            self.warning.setText(f"Patient {case_id} is already waiting or running in the queue; let it finish "
                                 "(or remove it) first.")
            self._show_warning(True)
            return False
        clips = self.clip_paths()
        folder = self.folder
        try:
            if needs_staging(folder, clips):
                folder = stage_case(self.settings().archive_dir, clips)
        except EndoshareError as exc:
            self.warning.setText(str(exc))
            self._show_warning(True)
            return False
        self.case_confirmed.emit(case_id, folder, tuple(p.name for p in clips))
        self.clear()
        return True

    def clear(self) -> None:
        self.clips.clear()
        self.folder = None
        self.folder_edit.clear()
        self.patient_id.clear()
        self._show_warning(False)
        self.preview.clear()
        self.preview.setText("Select a clip to see a frame of it")
        self._update_state()
