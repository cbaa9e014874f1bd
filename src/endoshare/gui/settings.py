"""App settings: one frozen value, stored with QSettings, checked before it is saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

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
from ..errors import EndoshareError, OptionsError
from ..pipeline import ProcessOptions, folder_problem
from ..render.common import ENCODERS, X264_PRESETS, EncodeSettings, Redaction
from ..storage import new_temp_file

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
    """The app's settings: the :class:`ProcessOptions` every case is queued with, and what only the app has
    (the shared folder, the number of cases at once, whether outputs wait for review).

    ``options`` holds the processing choices and the archive folder; its output folder is the private holding
    folder (outputs awaiting review), so that it is a valid value whatever the shared folder is: the shared
    folder is checked by :func:`validate_settings` and put in by :meth:`process_options` when a case is queued.
    """

    options: ProcessOptions
    shared_dir: Path
    workers: int = 1
    require_review: bool = True

    @classmethod
    def of(cls, archive_dir: Path, shared_dir: Path, *, workers: int = 1, require_review: bool = True,
           **choices: Any) -> GuiSettings:
        """Settings from folders and processing choices (any :class:`ProcessOptions` field; the rest default)."""
        options = ProcessOptions(out_dir=Path(archive_dir) / HOLDING_FOLDER, archive_dir=archive_dir,
                                 held_for_review=True, check_files=False, **choices)
        return cls(options, Path(shared_dir), workers, require_review)

    @classmethod
    def defaults(cls) -> GuiSettings:
        home = Path.home() / "Endoshare"
        return cls.of(home / "archive", home / "shared")

    @property
    def archive_dir(self) -> Path:
        return self.options.archive_dir

    def with_choices(self, **choices: Any) -> GuiSettings:
        """The same settings with some processing choices changed (validated as any ProcessOptions)."""
        return replace(self, options=replace(self.options, **choices))

    def output_dir(self) -> Path:
        """Where a run writes: the shared folder, or a private holding folder while review is pending."""
        return self.archive_dir / HOLDING_FOLDER if self.require_review else self.shared_dir

    def process_options(self, segments_file: Path | None = None) -> ProcessOptions:
        """The options a case is queued with (raises OptionsError when the folders cannot be used together)."""
        return replace(self.options, out_dir=self.output_dir(), held_for_review=self.require_review,
                       segments_file=segments_file, check_files=True)


#: ProcessOptions fields that are not app settings: folders (the app's own fields) and per-case choices.
NOT_SETTINGS = frozenset({"out_dir", "archive_dir", "held_for_review", "segments_file", "new_pseudonym"})
#: Where the processing choices are stored: one key per ProcessOptions field, its record value as JSON.
CHOICES_GROUP = "processing"
#: An hour is far beyond any sensible margin; a bigger stored number is a typo (and may not fit a float).
MAX_STORED_MARGIN_SECONDS = 3600


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
    # The processing choices were checked when ``settings.options`` was made (ProcessOptions validates itself).
    if not 1 <= settings.workers <= MAX_WORKERS:
        problems.append(f"Workers must be between 1 and {MAX_WORKERS}.")
    options = settings.options
    if options.detector == "oobnet" and options.weights is None:
        problems.append("OOBNet needs its weights file (oobnet_weights.h5): choose it, or pick the built-in model.")
    elif options.detector != "none" and load_weights:
        try:
            create_detector(options.detector, options.weights)
        except (EndoshareError, OSError, ValueError) as exc:
            problems.append(_weights_problem(exc, options.weights))
    return tuple(problems)


def _text(store: QSettings, key: str, default: str) -> str:
    value = store.value(key, default)
    return default if value is None else str(value)


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip().lstrip("-").isdigit() else None


#: Where settings files written before the choices were one group per ProcessOptions field (Endoshare 0.x up
#: to the engineering gate) kept the choices that existed then: (field, key, nested EncodeSettings field).
_EARLIER_KEYS = (("mode", "render/mode", None), ("redaction", "render/redaction", None),
                 ("detector", "detector/name", None), ("weights", "detector/weights", None),
                 ("margin_seconds", "detector/margin_seconds", None), ("keep_audio", "render/keep_audio", None),
                 ("mask_overlays", "render/mask_overlays", None),
                 ("keep_device_settings", "render/keep_device_settings", None),
                 ("encode", "render/codec", "codec"), ("encode", "render/crf", "crf"),
                 ("encode", "render/preset", "preset"), ("encode", "render/height", "height"))


def _earlier_choices(store: QSettings, base: dict[str, Any]) -> dict[str, Any]:
    """The choices a settings file of the earlier layout holds, in record form (read only where a choice
    has no key of its own yet; the next save writes them in today's layout)."""
    found: dict[str, Any] = {}
    for name, key, part in _EARLIER_KEYS:
        raw = store.value(key)
        if raw is None:
            continue
        text = str(raw)
        value: Any = text
        if isinstance(base[name], bool):
            value = {"true": True, "false": False}.get(text.lower(), text)
        elif name == "weights" or part in ("crf", "height"):
            value = None if text == "" else (_optional_int(text) if part else text)
        if part is None:
            found[name] = value
        else:
            found[name] = {**found.get(name, base[name]), part: value}
    return found


def _stored_choices(store: QSettings, base: ProcessOptions) -> dict[str, Any]:
    """The stored processing choices; each one missing or unusable (damaged, unknown, refused by
    ProcessOptions) is left at its default.  Anything but an explicit "mask overlays: false" thus masks."""
    record = base.to_record()
    earlier = _earlier_choices(store, record)
    for name in sorted(set(record) - NOT_SETTINGS):
        raw = store.value(f"{CHOICES_GROUP}/{name}")
        if raw is None and name not in earlier:
            continue
        try:
            value = json.loads(str(raw)) if raw is not None else earlier[name]
            ProcessOptions.from_record({**record, name: value})
        except (ValueError, TypeError):
            continue
        record[name] = value
    chosen = ProcessOptions.from_record(record)
    if chosen.detector not in {name for name, _ in DETECTOR_CHOICES}:
        chosen = replace(chosen, detector=base.detector)
    if chosen.margin_seconds > MAX_STORED_MARGIN_SECONDS:
        chosen = replace(chosen, margin_seconds=base.margin_seconds)
    return {name: getattr(chosen, name) for name in set(record) - NOT_SETTINGS}


def _stored_folder(store: QSettings, key: str, default: Path) -> Path:
    """A stored folder; the default when missing or not a full path (a relative one would depend on where
    the app was started)."""
    text = _text(store, key, "").strip()
    return Path(text) if text and Path(text).is_absolute() else default


def load_settings(store: QSettings) -> GuiSettings:
    """The saved settings; anything missing or unusable falls back to its default."""
    base = GuiSettings.defaults()
    return GuiSettings.of(
        _stored_folder(store, "folders/archive", base.archive_dir),
        _stored_folder(store, "folders/shared", base.shared_dir),
        workers=_optional_int(_text(store, "run/workers", "1")) or 1,
        require_review=_text(store, "review/required", "true").lower() == "true",
        **_stored_choices(store, base.options))


def save_settings(store: QSettings, settings: GuiSettings) -> None:
    store.setValue("folders/archive", str(settings.archive_dir))
    store.setValue("folders/shared", str(settings.shared_dir))
    # Every processing choice in its record form ("3/2" for a margin: read back as the same exact Fraction).
    for name, value in settings.options.to_record().items():
        if name not in NOT_SETTINGS:
            store.setValue(f"{CHOICES_GROUP}/{name}", json.dumps(value))
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
        self.output_height = QSpinBox()
        self.output_height.setRange(0, 4320)
        self.output_height.setSingleStep(2)
        self.output_height.setSpecialValueText("keep")
        self.advanced = QGroupBox("Advanced mode")
        advanced_form = QFormLayout(self.advanced)
        advanced_form.addRow("Codec", self.codec)
        self.crf.setToolTip("Lower numbers mean better quality and bigger files (the encoder's CRF value).")
        advanced_form.addRow("Quality (lower = better)", self.crf)
        advanced_form.addRow("Speed preset", self.preset)
        advanced_form.addRow("Output height", self.output_height)
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
        self._shown = settings
        options = settings.options
        self.archive.edit.setText(str(settings.archive_dir))
        self.shared.edit.setText(str(settings.shared_dir))
        self.mode.setCurrentIndex(self.mode.findData(options.mode))
        self.redaction.setCurrentIndex(self.redaction.findData(options.redaction.value))
        self.detector.setCurrentIndex(self.detector.findData(options.detector))
        self.weights.edit.setText(str(options.weights) if options.weights else "")
        self.workers.setValue(settings.workers)
        self.require_review.setChecked(settings.require_review)
        self.margin.setMaximum(max(MAX_MARGIN_SECONDS, float(options.margin_seconds)))
        self.margin.setValue(float(options.margin_seconds))
        # The box shows two decimals: an untouched margin such as 1/3 is saved as it was, not as 33/100.
        self._shown_margin = (self.margin.value(), options.margin_seconds)
        self.keep_audio.setChecked(options.keep_audio)
        self.mask_overlays.setChecked(options.mask_overlays)
        self.keep_device_settings.setChecked(options.keep_device_settings)
        self.keep_device_settings.setEnabled(options.mask_overlays)
        encode = options.encode
        self.codec.setCurrentIndex(self.codec.findData(encode.codec))
        self.crf.setValue(-1 if encode.crf is None else encode.crf)
        self.preset.setCurrentText(encode.preset)
        self.output_height.setValue(encode.height or 0)
        self._update_enabled()

    def _update_enabled(self) -> None:
        self.advanced.setEnabled(self.mode.currentData() == "advanced")
        self.weights.setEnabled(self.detector.currentData() != "none")
        self.margin.setEnabled(self.detector.currentData() != "none")

    def _chosen_margin(self) -> Fraction:
        shown_value, shown_margin = self._shown_margin
        return shown_margin if self.margin.value() == shown_value else margin_from_seconds(self.margin.value())

    def chosen_settings(self) -> GuiSettings:
        """The settings the dialog shows; raises OptionsError (saying what to fix) when they cannot be used.
        Processing choices the dialog does not show (such as the verification mode) are kept as they were."""
        folders = {}
        for label, field in (("archive folder", self.archive), ("shared folder", self.shared)):
            text = field.edit.text().strip()
            if not text:
                raise OptionsError(f"Choose the {label}.")
            if not Path(text).is_absolute():
                raise OptionsError(f"The {label} must be a full path, such as "
                                   f"{Path.home() / 'Endoshare' / label.split()[0]}, not “{text}”.")
            folders[label] = Path(text)
        advanced = self.mode.currentData() == "advanced"
        weights = self.weights.edit.text().strip()
        default_encode = ProcessOptions.default("encode")
        encode = EncodeSettings(
            codec=self.codec.currentData(), crf=self.crf.value() if self.crf.value() >= 0 else None,
            preset=self.preset.currentText(), height=self.output_height.value() or None) if advanced else default_encode
        kept = {name: getattr(self._shown.options, name) for name in self._shown.options.to_record()
                if name not in NOT_SETTINGS}
        return GuiSettings.of(
            folders["archive folder"], folders["shared folder"], workers=self.workers.value(),
            require_review=self.require_review.isChecked(),
            **{**kept, "mode": self.mode.currentData(), "redaction": Redaction(self.redaction.currentData()),
               "detector": self.detector.currentData(), "weights": Path(weights) if weights else None,
               "keep_audio": self.keep_audio.isChecked(), "margin_seconds": self._chosen_margin(),
               "mask_overlays": self.mask_overlays.isChecked(),
               "keep_device_settings": self.keep_device_settings.isChecked(), "encode": encode})

    def accept(self) -> None:
        try:
            settings = self.chosen_settings()
        except (OptionsError, ValueError) as exc:     # refused by ProcessOptions: says what to fix
            self._show_problems((str(exc),))
            return
        problems = validate_settings(settings, create_folders=True)
        if problems:
            self._show_problems(problems)
            return
        save_settings(self.store, settings)
        super().accept()

    def _show_problems(self, problems: tuple[str, ...]) -> None:
        self.problems.setText("Not saved:\n• " + "\n• ".join(problems))
        self.problems.show()
        self.problems_area.show()
