"""App settings: one frozen value, stored with QSettings, checked before it is saved."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..detect.registry import create_detector
from ..detect.smooth import DEFAULT_MARGIN_SECONDS
from ..errors import EndoshareError
from ..pipeline import MODES, ProcessOptions, folder_problem
from ..storage import new_temp_file
from ..render.common import ENCODERS, X264_PRESETS, EncodeSettings, Redaction

DETECTOR_CHOICES = (("builtin", "Built-in model (no download)"), ("oobnet", "OOBNet (weights file)"),
                    ("none", "None (no automatic redaction)"))
MAX_WORKERS = 16
#: The margin box's usual range and step; a larger margin saved by hand is kept (the box grows to show it).
MAX_MARGIN_SECONDS = 10.0
MARGIN_STEP_SECONDS = 0.1
#: Outputs held back until a person marked the case reviewed (setting "require review").
HOLDING_FOLDER = "awaiting-review"


@dataclass(frozen=True)
class GuiSettings:
    archive_dir: Path
    shared_dir: Path
    mode: str = "fast"
    redaction: Redaction = Redaction.BLACK
    detector: str = "builtin"
    weights: Path | None = None
    workers: int = 1
    codec: str = "h264"
    crf: int | None = None
    preset: str = "fast"
    height: int | None = None
    require_review: bool = True
    keep_audio: bool = False
    #: Burned-in text (recorder overlays) found and filled with black; device-settings overlays kept on request.
    mask_overlays: bool = True
    keep_device_settings: bool = False
    #: Seconds added before and after every detected span.
    margin_seconds: Fraction = DEFAULT_MARGIN_SECONDS

    @classmethod
    def defaults(cls) -> GuiSettings:
        home = Path.home() / "Endoshare"
        return cls(archive_dir=home / "archive", shared_dir=home / "shared")

    def encode(self) -> EncodeSettings:
        return EncodeSettings(codec=self.codec, crf=self.crf, preset=self.preset, height=self.height)

    def output_dir(self) -> Path:
        """Where a run writes: the shared folder, or a private holding folder while review is pending."""
        return self.archive_dir / HOLDING_FOLDER if self.require_review else self.shared_dir

    def process_options(self, segments_file: Path | None = None) -> ProcessOptions:
        return ProcessOptions(out_dir=self.output_dir(), archive_dir=self.archive_dir, mode=self.mode,
                              redaction=self.redaction, segments_file=segments_file, detector=self.detector,
                              weights=self.weights, encode=self.encode(), keep_audio=self.keep_audio,
                              margin_seconds=self.margin_seconds, held_for_review=self.require_review,
                              mask_overlays=self.mask_overlays, keep_device_settings=self.keep_device_settings)


def margin_from_seconds(seconds: float) -> Fraction:
    """The exact margin a spin box's value stands for: 0.1 s is 1/10, not the nearest binary float."""
    return Fraction(str(seconds)).limit_denominator(1000)


def _writable(path: Path, label: str, create: bool = False) -> str | None:
    if not path.is_absolute():
        return (f"The {label} must be a full path, such as {Path.home() / 'Endoshare' / label.split()[0]}, not "
                f"“{path}”.")
    if not path.is_dir():
        if path.exists():
            return f"The {label} {path} is a file, not a folder; choose a folder."
        if not create:
            return (f"The {label} {path} does not exist (deleted, renamed, or its disk is not connected); "
                    "reconnect it, or choose or create a folder in File → Settings.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        new_temp_file(path, ".write-test").unlink()
    except OSError as exc:
        return f"The {label} {path} is not writable ({exc.strerror or exc}); choose another folder or ask for access."
    return None


def _margin_problem(margin: object) -> str | None:
    try:
        exact = Fraction(margin)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return f"The safety margin must be a number of seconds such as 0.5, got {margin!r}."
    if exact < 0:
        return f"The safety margin must be 0 seconds or more, got {float(exact):g} s."
    return None


def _weights_problem(exc: BaseException, weights: Path | None) -> str:
    """The loader's message, unless it is a low-level one (an errno from the HDF5 library, say)."""
    text = str(exc)
    if weights is not None and ("Errno" in text or "HDF5" in text or "h5py" in text or "unable to" in text.lower()):
        return (f"The weights file {weights} cannot be read: it is damaged or not an OOBNet weights file. "
                "Download it again, or choose the built-in model.")
    return text


def validate_settings(settings: GuiSettings, load_weights: bool = True,
                      create_folders: bool = False) -> tuple[str, ...]:
    """Every problem that would make a run fail, as sentences for the user (empty: all good).

    ``load_weights=False`` skips loading the detector (OOBNet's file is 68 MB): for checks that must
    not hold up the window; a weights file that broke since it was saved then fails each case with the
    loader's message.  Folders must be full paths; a missing one is refused (a deleted or disconnected
    folder is never silently re-created) unless ``create_folders`` (the user just chose it in Settings).
    """
    problems = []
    for path, label in ((settings.archive_dir, "archive folder"), (settings.shared_dir, "shared folder")):
        if not str(path).strip() or str(path) == ".":
            problems.append(f"Choose the {label}.")
        elif (problem := _writable(path, label, create_folders)) is not None:
            problems.append(problem)
    # The core's rule (the archive holds the pseudonym mapping: sharing it would undo the de-identification).
    if (problem := folder_problem(settings.shared_dir, settings.archive_dir)) is not None:
        problems.append(problem)
    if (problem := _margin_problem(settings.margin_seconds)) is not None:
        problems.append(problem)
    if not 1 <= settings.workers <= MAX_WORKERS:
        problems.append(f"Workers must be between 1 and {MAX_WORKERS}.")
    if settings.mode not in MODES:
        problems.append(f"Mode must be one of {', '.join(MODES)}.")
    try:
        settings.encode()
    except ValueError as exc:
        problems.append(f"Encoding: {exc}.")
    if settings.detector == "oobnet" and settings.weights is None:
        problems.append("OOBNet needs its weights file (oobnet_weights.h5): choose it, or pick the built-in model.")
    elif settings.detector != "none" and load_weights:
        try:
            create_detector(settings.detector, settings.weights)
        except (EndoshareError, OSError, ValueError) as exc:
            problems.append(_weights_problem(exc, settings.weights))
    return tuple(problems)


def _text(store: QSettings, key: str, default: str) -> str:
    value = store.value(key, default)
    return default if value is None else str(value)


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip().lstrip("-").isdigit() else None


def _margin(text: str, default: Fraction) -> Fraction:
    try:
        margin = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        return default
    # An hour is far beyond any sensible margin; a bigger number is a typo (and may not fit a float).
    return margin if 0 <= margin <= 3600 else default


def load_settings(store: QSettings) -> GuiSettings:
    """The saved settings; anything missing or unusable falls back to its default."""
    base = GuiSettings.defaults()
    weights = _text(store, "detector/weights", "")
    settings = GuiSettings(
        archive_dir=Path(_text(store, "folders/archive", str(base.archive_dir))),
        shared_dir=Path(_text(store, "folders/shared", str(base.shared_dir))),
        mode=_text(store, "render/mode", base.mode),
        redaction=Redaction(_text(store, "render/redaction", base.redaction.value))
        if _text(store, "render/redaction", "") in {r.value for r in Redaction} else base.redaction,
        detector=_text(store, "detector/name", base.detector),
        weights=Path(weights) if weights else None,
        workers=_optional_int(_text(store, "run/workers", "1")) or 1,
        codec=_text(store, "render/codec", base.codec),
        crf=_optional_int(_text(store, "render/crf", "")),
        preset=_text(store, "render/preset", base.preset),
        height=_optional_int(_text(store, "render/height", "")),
        require_review=_text(store, "review/required", "true").lower() == "true",
        keep_audio=_text(store, "render/keep_audio", "false").lower() == "true",
        # Anything but an explicit "false" masks: the safe reading of a missing or damaged value.
        mask_overlays=_text(store, "render/mask_overlays", "true").lower() != "false",
        keep_device_settings=_text(store, "render/keep_device_settings", "false").lower() == "true",
        margin_seconds=_margin(_text(store, "detector/margin_seconds", ""), base.margin_seconds))
    if settings.mode not in MODES:
        settings = replace(settings, mode=base.mode)
    if settings.detector not in {name for name, _ in DETECTOR_CHOICES}:
        settings = replace(settings, detector=base.detector)
    try:
        settings.encode()
    except ValueError:
        settings = replace(settings, codec=base.codec, crf=None, preset=base.preset, height=None)
    return settings


def save_settings(store: QSettings, settings: GuiSettings) -> None:
    store.setValue("folders/archive", str(settings.archive_dir))
    store.setValue("folders/shared", str(settings.shared_dir))
    store.setValue("render/mode", settings.mode)
    store.setValue("render/redaction", settings.redaction.value)
    store.setValue("render/codec", settings.codec)
    store.setValue("render/crf", "" if settings.crf is None else str(settings.crf))
    store.setValue("render/preset", settings.preset)
    store.setValue("render/height", "" if settings.height is None else str(settings.height))
    store.setValue("detector/name", settings.detector)
    store.setValue("detector/weights", "" if settings.weights is None else str(settings.weights))
    # "3/2", not 1.5: read back as the same exact Fraction.
    store.setValue("detector/margin_seconds", str(Fraction(settings.margin_seconds)))
    store.setValue("render/keep_audio", "true" if settings.keep_audio else "false")
    store.setValue("render/mask_overlays", "true" if settings.mask_overlays else "false")
    store.setValue("render/keep_device_settings", "true" if settings.keep_device_settings else "false")
    store.setValue("run/workers", str(settings.workers))
    store.setValue("review/required", "true" if settings.require_review else "false")
    store.sync()


def first_run(store: QSettings) -> bool:
    """No settings were ever saved here."""
    return not store.contains("folders/archive")


def settings_store(path: Path | None) -> QSettings:
    """An INI file at ``path`` (tests, portable installs) or the user's standard settings location."""
    if path is not None:
        return QSettings(str(path), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Endoshare", "endoshare-gui")


class _FolderField(QWidget):
    def __init__(self, caption: str, pick_file: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = caption
        self.pick_file = pick_file
        self.edit = QLineEdit()
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse)

    def _browse(self) -> None:
        if self.pick_file:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, self.edit.text(),
                                                    "Keras weights (*.h5 *.hdf5 *.npz);;All files (*)")
        else:
            chosen = QFileDialog.getExistingDirectory(self, self.caption, self.edit.text())
        if chosen:
            self.edit.setText(chosen)


class SettingsDialog(QDialog):
    """Edits the settings; Save checks them first and stays open, listing the problems, if any."""

    def __init__(self, store: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Endoshare settings")
        self.store = store
        current = load_settings(store)
        self.archive = _FolderField("Archive folder (private: mapping, detections)")
        self.shared = _FolderField("Shared folder (de-identified videos)")
        self.mode = QComboBox()
        self.mode.addItem("Fast (copy what needs no change)", "fast")
        self.mode.addItem("Advanced (re-encode with the options below)", "advanced")
        self.redaction = QComboBox()
        for style, label in ((Redaction.BLACK, "Black frames"), (Redaction.BLUR, "Blur"),
                             (Redaction.CUT, "Cut (the output is shorter)")):
            self.redaction.addItem(label, style.value)
        self.detector = QComboBox()
        for name, label in DETECTOR_CHOICES:
            self.detector.addItem(label, name)
        self.weights = _FolderField("Detector weights file", pick_file=True)
        self.margin = QDoubleSpinBox()
        self.margin.setRange(0.0, MAX_MARGIN_SECONDS)
        self.margin.setSingleStep(MARGIN_STEP_SECONDS)
        self.margin.setDecimals(2)
        self.margin.setSuffix(" s")
        self.margin.setToolTip("Extra time redacted before and after every span the detector finds, so the "
                               "first and last frames outside the patient are covered too. Spans you set "
                               "by hand in Review are used as they are.")
        self.keep_audio = QCheckBox("Keep the clips' audio")
        self.keep_audio.setToolTip("Off: the output has no sound (operating-room audio often carries names). "
                                   "On: the sound is kept, re-encoded to AAC, silent wherever the video is "
                                   "redacted (or cut with it), and checked in the report.")
        self.mask_overlays = QCheckBox("Find burned-in text (name, date of birth, ID) and fill it with black")
        self.mask_overlays.setToolTip("Recorder overlays written into the picture itself. Off: the picture is "
                                      "left as it is, and the report says so.")
        self.keep_device_settings = QCheckBox("Keep overlays that show device settings only")
        self.keep_device_settings.setToolTip("Pressure, flow, light and similar readouts stay visible when every "
                                             "word of them reads as a device setting; anything else is masked.")
        self.mask_overlays.toggled.connect(self.keep_device_settings.setEnabled)
        self.workers = QSpinBox()
        self.workers.setRange(1, MAX_WORKERS)
        self.require_review = QCheckBox("Hold each output until a person has reviewed the case")
        self.codec = QComboBox()
        for codec in ENCODERS:
            self.codec.addItem(codec.upper() if codec != "hevc" else "HEVC (H.265)", codec)
        self.crf = QSpinBox()
        self.crf.setRange(-1, 63)
        self.crf.setSpecialValueText("codec default")
        self.preset = QComboBox()
        self.preset.addItems(list(X264_PRESETS))
        self.height = QSpinBox()
        self.height.setRange(0, 4320)
        self.height.setSingleStep(2)
        self.height.setSpecialValueText("keep")
        self.advanced = QGroupBox("Advanced mode")
        advanced_form = QFormLayout(self.advanced)
        advanced_form.addRow("Codec", self.codec)
        self.crf.setToolTip("Lower numbers mean better quality and bigger files (the encoder's CRF value).")
        advanced_form.addRow("Quality (lower = better)", self.crf)
        advanced_form.addRow("Speed preset", self.preset)
        advanced_form.addRow("Output height", self.height)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #b00020;")
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long message scrolls instead of squashing the form.
        self.problems_area = QScrollArea()
        self.problems_area.setWidget(self.problems)
        self.problems_area.setWidgetResizable(True)
        self.problems_area.setMaximumHeight(120)
        self.problems_area.setFrameShape(QScrollArea.Shape.NoFrame)
        self.problems_area.hide()
        self.intro = QLabel()
        self.intro.setWordWrap(True)
        self.intro.hide()

        form = QFormLayout()
        form.addRow("Archive folder", self.archive)
        form.addRow("Shared folder", self.shared)
        form.addRow("Mode", self.mode)
        form.addRow("Redaction", self.redaction)
        form.addRow("Detector", self.detector)
        form.addRow("Weights file", self.weights)
        form.addRow("Safety margin", self.margin)
        form.addRow("Audio", self.keep_audio)
        form.addRow("Burned-in text", self.mask_overlays)
        form.addRow("", self.keep_device_settings)
        form.addRow("Cases at once", self.workers)
        form.addRow("Review", self.require_review)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.problems_area)
        layout.addWidget(buttons)
        self.mode.currentIndexChanged.connect(self._update_enabled)
        self.detector.currentIndexChanged.connect(self._update_enabled)
        self.show_settings(current)

    def show_first_run(self) -> None:
        """The first start: say what the two folders are for before anything else."""
        self.setWindowTitle("Welcome to Endoshare: first settings")
        self.intro.setText(
            "<b>Before the first case, choose two folders.</b><br>The <b>archive folder</b> is private: it keeps "
            "the list linking patients to pseudonyms, the queue and the audit log (keep it on this computer, "
            "backed up). The <b>shared folder</b> receives only de-identified videos and their reports. "
            "Outputs wait for a person's review before they are shared.")
        self.intro.show()

    def show_settings(self, settings: GuiSettings) -> None:
        self.archive.edit.setText(str(settings.archive_dir))
        self.shared.edit.setText(str(settings.shared_dir))
        self.mode.setCurrentIndex(self.mode.findData(settings.mode))
        self.redaction.setCurrentIndex(self.redaction.findData(settings.redaction.value))
        self.detector.setCurrentIndex(self.detector.findData(settings.detector))
        self.weights.edit.setText(str(settings.weights) if settings.weights else "")
        self.workers.setValue(settings.workers)
        self.require_review.setChecked(settings.require_review)
        self.margin.setMaximum(max(MAX_MARGIN_SECONDS, float(settings.margin_seconds)))
        self.margin.setValue(float(settings.margin_seconds))
        # The box shows two decimals: an untouched margin such as 1/3 is saved as it was, not as 33/100.
        self._shown_margin = (self.margin.value(), settings.margin_seconds)
        self.keep_audio.setChecked(settings.keep_audio)
        self.mask_overlays.setChecked(settings.mask_overlays)
        self.keep_device_settings.setChecked(settings.keep_device_settings)
        self.keep_device_settings.setEnabled(settings.mask_overlays)
        self.codec.setCurrentIndex(self.codec.findData(settings.codec))
        self.crf.setValue(-1 if settings.crf is None else settings.crf)
        self.preset.setCurrentText(settings.preset)
        self.height.setValue(settings.height or 0)
        self._update_enabled()

    def _update_enabled(self) -> None:
        self.advanced.setEnabled(self.mode.currentData() == "advanced")
        self.weights.setEnabled(self.detector.currentData() != "none")
        self.margin.setEnabled(self.detector.currentData() != "none")

    def _chosen_margin(self) -> Fraction:
        shown_value, shown_margin = self._shown_margin
        return shown_margin if self.margin.value() == shown_value else margin_from_seconds(self.margin.value())

    def chosen_settings(self) -> GuiSettings:
        advanced = self.mode.currentData() == "advanced"
        weights = self.weights.edit.text().strip()
        return GuiSettings(
            archive_dir=Path(self.archive.edit.text().strip()), shared_dir=Path(self.shared.edit.text().strip()),
            mode=self.mode.currentData(), redaction=Redaction(self.redaction.currentData()),
            detector=self.detector.currentData(), weights=Path(weights) if weights else None,
            workers=self.workers.value(), require_review=self.require_review.isChecked(),
            keep_audio=self.keep_audio.isChecked(), margin_seconds=self._chosen_margin(),
            mask_overlays=self.mask_overlays.isChecked(), keep_device_settings=self.keep_device_settings.isChecked(),
            codec=self.codec.currentData() if advanced else "h264",
            crf=(self.crf.value() if self.crf.value() >= 0 else None) if advanced else None,
            preset=self.preset.currentText() if advanced else "fast",
            height=(self.height.value() or None) if advanced else None)

    def accept(self) -> None:
        settings = self.chosen_settings()
        problems = validate_settings(settings, create_folders=True)
        if problems:
            self.problems.setText("Not saved:\n• " + "\n• ".join(problems))
            self.problems.show()
            self.problems_area.show()
            return
        save_settings(self.store, settings)
        super().accept()
