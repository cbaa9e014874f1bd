"""One case end to end: clips → merged, redacted, scrubbed, verified, pseudonymised output + report.

:func:`process_case` raises the typed errors of :mod:`endoshare.errors`; :func:`process_cases` runs
several cases, turning each failure into a failed :class:`CaseResult` so that the batch goes on.
Progress is reported as :class:`ProgressEvent` values through a callback; ``cancel`` is polled often.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, get_type_hints

import av.error

from .cases import Case, check_recording, clip_order, discover_case
from .detect.registry import DETECTOR_NAMES
from .detect.smooth import DEFAULT_MARGIN_SECONDS
from .errors import (
    CancelledError,
    DiskFullError,
    EndoshareError,
    OptionsError,
    OutputError,
    SegmentsFileError,
    VerificationError,
)
from .identity import DETECTIONS_FOLDER, CaseLock, MappingRow, MappingStore, new_pseudonym
from .media.join import JoinPlan, plan_join
from .media.probe import MediaInfo, probe
from .overlay.find import OverlayFinder, OverlayOptions
from .overlay.regions import OverlaySet, load_overlays_file
from .overlay.text import TextDetector
from .overlay.verify import verify_overlays
from .render.audio import add_audio, has_audio
from .render.common import EncodeSettings, Redaction, RenderResult
from .render.copy import render_copy
from .render.reencode import render_reencode
from .render.smart import NotSpliceable, render_smart
from .report import input_summary, json_bytes, software_versions, write_json_atomically
from .storage import (
    FULL_ERRNOS,
    PLAIN_OWNER,
    PRIVATE_FILE_MODE,
    full_folder_error,
    new_temp_file,
    private_dir,
    publish,
    remove_stale,
    shared_file_mode,
    write_temp,
)
from .timeline import SegmentSet, format_rate, load_segments_file
from .types import Cancel, Progress
from .verify import DEFAULT_VERIFY_MODE, VERIFY_MODES, CheckResult, verify_output

MODES = ("fast", "advanced")
#: Unpublished outputs end with this (their names are made by :mod:`endoshare.storage`).
TEMP_SUFFIX = ".mp4.partial"
#: What a case without burned-in text is rendered with (frozen, so one value serves every call).
NO_OVERLAYS = OverlaySet()


class Phase(StrEnum):
    """The steps of one case, in order, as its progress events name them."""

    PROBE = "probe"
    DETECT = "detect"
    OVERLAYS = "overlays"
    RENDER = "render"
    VERIFY = "verify"
    #: The coordinator moves the verified output into the shared folder (queue runs).
    PUBLISH = "publish"
    DONE = "done"


#: Share of a case's work per phase, for one overall fraction that only moves forward.
PHASE_WEIGHTS = {Phase.PROBE: 0.05, Phase.DETECT: 0.15, Phase.OVERLAYS: 0.05, Phase.RENDER: 0.6, Phase.VERIFY: 0.2}


@dataclass(frozen=True)
class ProcessOptions:
    out_dir: Path
    archive_dir: Path
    mode: str = "fast"
    redaction: Redaction = Redaction.BLACK
    segments_file: Path | None = None
    detector: str = "builtin"           # "none", or a name from endoshare.detect.registry
    weights: Path | None = None
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    new_pseudonym: bool = False
    #: "full" decodes every output frame; "splices" only what was re-encoded, its neighbours and keyframes.
    verify: str = DEFAULT_VERIFY_MODE
    #: Keep the clips' audio (re-encoded, silenced or cut with the redacted video); dropped by default
    #: because operating-room audio carries names.
    keep_audio: bool = False
    #: Detected spans are widened by this much on each side (seconds, exact).
    margin_seconds: Fraction = DEFAULT_MARGIN_SECONDS
    #: ``out_dir`` is a private holding folder inside the archive (the GUI's "require review": outputs wait
    #: there, private, until a person moves them to the shared folder); otherwise it must lie apart from it.
    held_for_review: bool = False
    #: Check that the segments and weights files exist and the segments file reads (off only for options
    #: restored from the queue: they were checked when the job was added; a file gone since fails that case).
    check_files: bool = field(default=True, compare=False, repr=False)
    #: Find burned-in text (recorder overlays: name, date of birth, ID...) and fill it with black.
    mask_overlays: bool = True
    #: Leave overlay regions that read as device settings only (pressure, flow, light) visible.
    keep_device_settings: bool = False
    #: Mask exactly these regions (a review's edit, :meth:`OverlaySet.to_json`, kept private in the archive)
    #: instead of running the overlay finder; the output checks still run on them.
    overlays_file: Path | None = None

    def __post_init__(self) -> None:
        """The one place where processing options are checked (CLI, queue and GUI all build this value).

        Paths are stored absolute, so that a job resumed from another working directory writes where
        it was asked to.  Raises :class:`~endoshare.errors.OptionsError` (a ``ValueError``).
        """
        if self.mode not in MODES:
            raise OptionsError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.verify not in VERIFY_MODES:
            raise OptionsError(f"verify {self.verify!r} is not one of {', '.join(VERIFY_MODES)}")
        if self.detector != "none" and self.detector not in DETECTOR_NAMES:
            raise OptionsError(f"unknown detector {self.detector!r}; choose one of: "
                               f"{', '.join((*DETECTOR_NAMES, 'none'))}")
        try:
            margin = Fraction(self.margin_seconds)
        except (TypeError, ValueError, ZeroDivisionError):
            raise OptionsError(f"the safety margin must be a number of seconds, got {self.margin_seconds!r}") \
                from None
        object.__setattr__(self, "margin_seconds", margin)
        if self.margin_seconds < 0:
            raise OptionsError(f"the safety margin must not be negative, got {self.margin_seconds} s")
        for name in ("out_dir", "archive_dir", "segments_file", "weights", "overlays_file"):
            value = getattr(self, name)
            if value is not None:
                if not str(value).strip():
                    raise OptionsError(f"the {name.replace('_', ' ')} must not be empty")
                object.__setattr__(self, name, Path(os.path.abspath(value)))
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        problem = folder_problem(self.out_dir, self.archive_dir, self.held_for_review)
        if problem is not None:
            raise OptionsError(problem, path=self.archive_dir)
        if self.check_files:
            if self.segments_file is not None:
                load_segments_file(self.segments_file)      # SegmentsFileError (a ValueError) naming the file
            if self.overlays_file is not None:
                load_overlays_file(self.overlays_file)      # OverlaysFileError (a ValueError) naming the file
            if self.weights is not None and not self.weights.is_file():
                raise OptionsError(f"The weights file {self.weights} does not exist; check the path given to "
                                   "--weights (see 'endoshare models').", path=self.weights)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (the one definition that the CLI and GUI show and start from)."""
        spec = {f.name: f for f in dataclasses.fields(cls)}[name]
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        if spec.default is dataclasses.MISSING:
            raise KeyError(f"{name} has no default")
        return spec.default

    def to_record(self) -> dict[str, Any]:
        """Every chosen field, paths included, as JSON values: the form the job queue and the audit log store
        (the report's :meth:`to_json` leaves paths out on purpose).  :meth:`from_record` reads it back."""
        return {f.name: _record_value(getattr(self, f.name), f.name) for f in dataclasses.fields(self)
                if f.name not in NOT_RECORDED}

    @classmethod
    def from_record(cls, record: dict[str, Any], *, check_files: bool = False) -> ProcessOptions:
        """Options from their :meth:`to_record` form, validated as any other.  A field missing from an older
        record takes its default (the safe reading: overlays masked, full verification); an unknown field or
        a value of the wrong type raises :class:`~endoshare.errors.OptionsError` naming it.  Files are not
        checked by default: the options were checked when recorded, and a file gone since fails that case."""
        if not isinstance(record, dict):
            raise OptionsError(f"processing options must be a JSON object, got {type(record).__name__}")
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)} - NOT_RECORDED
        unknown = sorted(set(record) - names)
        if unknown:
            raise OptionsError(f"unknown processing option(s) {', '.join(unknown)}: written by a newer Endoshare? "
                               "Process the case again with this version's settings.")
        values = {name: _from_record_value(hints[name], record[name], name) for name in names if name in record}
        values.update({name: default for name, default in _OLDER_RECORD_DEFAULTS.items()
                       if name not in record})
        return cls(**values, check_files=check_files)

    def to_json(self) -> dict[str, object]:
        """The settings as the report shows them: an allow-list without paths (see :data:`NOT_IN_REPORT`)."""
        return {"mode": self.mode, "redaction": self.redaction.value, "detector": self.detector,
                "segments_from_file": self.segments_file is not None, "encode": self.encode.to_json(),
                "new_pseudonym": self.new_pseudonym, "verify": self.verify, "keep_audio": self.keep_audio,
                "margin_seconds": format_rate(self.margin_seconds), "mask_overlays": self.mask_overlays,
                "keep_device_settings": self.keep_device_settings,
                "overlays_from_file": self.overlays_file is not None}


#: Fields of :class:`ProcessOptions` that are how a value was built, not a choice: never recorded.
NOT_RECORDED = frozenset({"check_files"})
#: Fields the report's settings leave out: private paths (folders, segments and weights files), and whether
#: the output waits for review (it is published only after it).
NOT_IN_REPORT = frozenset({"out_dir", "archive_dir", "segments_file", "weights", "held_for_review", "check_files",
                           "overlays_file"})
_BOOL_FIELDS = ("new_pseudonym", "keep_audio", "held_for_review", "mask_overlays", "keep_device_settings")
#: What a record written before a field existed means, where that differs from today's default: jobs queued
#: before the verification modes were verified in full, and before the margin was recorded with the 0.5 s
#: margin of that time.
_OLDER_RECORD_DEFAULTS: dict[str, object] = {"verify": "full", "margin_seconds": Fraction(1, 2)}


def _record_value(value: object, name: str) -> object:
    """One option value in JSON form: paths and exact fractions as text, enums by value, nested settings as
    objects of their fields."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (Path, Fraction)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _record_value(getattr(value, f.name), f"{name}.{f.name}") for f in dataclasses.fields(value)}
    raise TypeError(f"option {name} has no record form for {type(value).__name__}; teach _record_value")


def _from_record_value(hint: Any, value: object, name: str) -> Any:
    """The inverse of :func:`_record_value` for a field annotated ``hint``; OptionsError on a wrong type."""
    if isinstance(hint, types.UnionType):
        kinds = [k for k in hint.__args__ if k is not type(None)]
        if value is None and len(kinds) < len(hint.__args__):
            return None
        hint = kinds[0]
    wrong = OptionsError(f"the recorded option {name} has a value of the wrong kind: {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise OptionsError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong
        return value
    if hint is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if hint in (Path, Fraction):
        if not isinstance(value, str):
            raise wrong
        try:
            return hint(value)
        except (ValueError, ZeroDivisionError):
            raise wrong from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise OptionsError(f"{name} {value!r} is not one of {', '.join(str(m.value) for m in hint)}") from None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise wrong
        inner = get_type_hints(hint)
        unknown = sorted(set(value) - set(inner))
        if unknown:
            raise OptionsError(f"unknown setting(s) {', '.join(unknown)} in the recorded option {name}")
        try:
            return hint(**{key: _from_record_value(inner[key], item, f"{name}.{key}") for key, item in value.items()})
        except ValueError as exc:
            raise OptionsError(f"the recorded option {name} is invalid: {exc}") from None
    raise TypeError(f"option {name} of type {hint} has no record form; teach _from_record_value")


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def folder_problem(out_dir: Path, archive_dir: Path, held_for_review: bool = False) -> str | None:
    """Why the output and archive folders cannot be used together (symlinks resolved), or None.

    The archive holds the list that links patients to pseudonyms: it must never be the shared folder,
    lie inside it, or contain it (a shared folder inside the private archive would be private, and the
    archive's files would sit next to shared ones).  The one exception is a private holding folder for
    outputs awaiting review, which must lie inside the archive.
    """
    out, archive = Path(os.path.realpath(out_dir)), Path(os.path.realpath(archive_dir))
    if out == archive:
        return (f"The archive folder {archive_dir} must not be the shared folder {out_dir}: the archive keeps the "
                "list that links patients to pseudonyms and must stay private. Choose two separate folders.")
    if _inside(archive, out):
        return (f"The archive folder {archive_dir} is inside the shared output folder {out_dir}: whoever can read "
                "the shared folder could read the list that links patients to pseudonyms. Choose an archive "
                "folder outside the shared folder.")
    if held_for_review:
        if not _inside(out, archive):
            return (f"The holding folder {out_dir} for outputs awaiting review must be inside the archive folder "
                    f"{archive_dir}, which is private.")
    elif _inside(out, archive):
        return (f"The shared output folder {out_dir} is inside the archive folder {archive_dir}, which is private "
                "(its files and folders are readable by their owner only). Choose a shared folder outside the "
                "archive.")
    return None


@dataclass(frozen=True)
class CaseRequest:
    folder: Path
    case_id: str | None = None


@dataclass(frozen=True)
class ProgressEvent:
    phase: Phase
    done: int
    total: int
    #: Whole case, 0..1, never decreasing.
    fraction: float


class CaseStatus(StrEnum):
    """How processing one case ended (``status`` in a :class:`CaseResult` and its JSON)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    status: CaseStatus
    pseudonym: str | None = None
    output: Path | None = None
    report: Path | None = None
    error: str | None = None
    error_type: str | None = None
    reused_pseudonym: bool = False

    def to_json(self) -> dict[str, object]:
        return {"case_id": self.case_id, "pseudonym": self.pseudonym,
                "output": str(self.output) if self.output else None,
                "report": str(self.report) if self.report else None,
                "status": self.status, "error": self.error}


ProgressCallback = Callable[[ProgressEvent], None]


class _Progress:
    def __init__(self, callback: ProgressCallback | None, phases: tuple[Phase, ...]) -> None:
        self.callback = callback
        weights = {p: PHASE_WEIGHTS[p] for p in phases}
        scale = sum(weights.values())
        self.start: dict[Phase, float] = {}
        self.end: dict[Phase, float] = {}
        running = 0.0
        for phase in phases:
            self.start[phase] = running
            running += weights[phase] / scale
            self.end[phase] = running
        # Each phase ends exactly where the next starts, and the last at 1: rounding never moves back.
        self.end[phases[-1]] = 1.0

    def phase(self, name: Phase) -> Progress:
        def report(done: int, total: int) -> None:
            if self.callback is not None and total > 0:
                start, end = self.start[name], self.end[name]
                fraction = end if done >= total else min(end, start + done / total * (end - start))
                self.callback(ProgressEvent(name, done, total, fraction))
        return report


def probe_case(case: Case, progress: Progress | None = None) -> list[MediaInfo]:
    infos = []
    for number, clip in enumerate(case.clips, start=1):
        info = probe(clip)
        check_recording(info)  # a still image, no video stream or no frame: an error naming the file
        infos.append(info)
        if progress is not None:
            progress(number, len(case.clips))
    # Names decide the order; the recording time (tag, else file time) breaks ties between equal names.
    return sorted(infos, key=lambda i: (clip_order(case.folder, i.path), i.recording_time or "", i.mtime))


def find_segments(plan: JoinPlan, options: ProcessOptions, case: Case, progress: Progress,
                  cancel: Cancel | None, overlays: OverlayFinder | None = None
                  ) -> tuple[SegmentSet, str, dict[str, Any] | None]:
    """The spans to redact, where they came from, and the detection result (for the archive) if any.

    When a detector runs, ``overlays`` is fed the keyframes it decodes (nothing is decoded twice)."""
    total = plan.total_frames
    if options.segments_file is not None:
        segments = load_segments_file(options.segments_file)
        if segments and segments.segments[-1].end_frame > total:
            raise SegmentsFileError(
                f"Segments file {options.segments_file} reaches frame {segments.segments[-1].end_frame} but "
                f"case {case.folder} has {total} frames on its merged timeline; was it made for another "
                "case or for the clips in another order?", path=options.segments_file)
        return segments, "segments file", None
    if options.detector == "none":
        return SegmentSet(), "none", None
    from .detect.case import detect_case
    from .detect.run import DetectOptions
    from .detect.smooth import SmoothingOptions
    detect_options = DetectOptions(smoothing=SmoothingOptions(margin_seconds=options.margin_seconds))
    result = detect_case(plan, options.detector, options.weights, detect_options, progress=progress, cancel=cancel,
                         keyframes=None if overlays is None else overlays.sink)
    return result.segments, f"detector {options.detector}", result.to_json()


def overlay_finder(plan: JoinPlan, options: ProcessOptions, progress: Progress,
                   cancel: Cancel | None) -> OverlayFinder | None:
    """The burned-in text finder for the case (None when masking is off or an overlays file gives the regions)."""
    if options.overlays_file is not None or not options.mask_overlays:
        return None
    return OverlayFinder(plan, OverlayOptions(keep_device_settings=options.keep_device_settings), TextDetector(),
                         progress, cancel)


def find_case_overlays(plan: JoinPlan, options: ProcessOptions, finder: OverlayFinder | None
                       ) -> tuple[OverlaySet, TextDetector | None]:
    """The burned-in text regions to mask (none when masking is off; those of the overlays file when one is
    given: the finder does not run), and the detector for the check.  ``finder`` (:func:`overlay_finder`)
    reads every clip that detection did not feed it in full."""
    if options.overlays_file is not None:
        target = plan.target
        return load_overlays_file(options.overlays_file, target.width, target.height, plan.total_frames), \
            TextDetector()
    if finder is None:
        return NO_OVERLAYS, None
    return finder.run(), finder.detector


def check_out_dir(options: ProcessOptions) -> None:
    """Create the output folder (private if it holds outputs for review) and check that we may write there."""
    path = options.out_dir
    try:
        if options.held_for_review:
            private_dir(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
        new_temp_file(path, ".write-test").unlink()
    except OSError as exc:
        raise OutputError(f"Cannot write into the output folder {path} ({exc.strerror or exc}); choose a "
                          "folder you may write to, or ask for write access.", path=path) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def render(plan: JoinPlan, segments: SegmentSet, options: ProcessOptions, out_path: Path,
           progress: Progress, cancel: Cancel | None,
           overlays: OverlaySet = NO_OVERLAYS) -> RenderResult:
    """Fast mode copies what it can: the whole case when nothing is redacted, else every group of
    pictures without a redacted frame (smart render); advanced mode, and whatever cannot be spliced,
    is re-encoded in full."""
    fallback = ""
    if options.mode == "fast" and plan.copy_compatible:
        try:
            # With nothing redacted the splicer copies everything (rebuilding repeated timestamps, converting
            # Annex B); the plain copy takes what it cannot plan (clips that do not start with an IDR picture).
            return render_smart(plan, segments, options.redaction, options.encode, out_path, progress, cancel,
                                overlays)
        except NotSpliceable as exc:
            untimed = any(c.info.video.untimed_packets for c in plan.clips)
            if not segments and not overlays and not untimed:       # nothing to change in any picture
                return render_copy(plan, out_path, progress, cancel)
            fallback = f"fast mode could not splice ({exc}); the whole case was re-encoded"
    elif options.mode == "fast":
        fallback = f"fast mode re-encoded the whole case: {'; '.join(plan.reasons)}"
    result = render_reencode(plan, segments, options.redaction, options.encode, out_path, progress, cancel,
                             overlays)
    return replace(result, notes=(*result.notes, fallback)) if fallback else result


def _with_audio(plan: JoinPlan, segments: SegmentSet, options: ProcessOptions, video: Path,
                rendered: RenderResult, cancel: Cancel | None, temp_owner: str) -> RenderResult:
    """Remux ``video`` with the case's audio (silenced/cut like the video) in place of itself."""
    if not has_audio(plan):
        return replace(rendered, notes=(*rendered.notes, "--keep-audio: no clip has audio; none written"))
    with_audio = new_temp_file(video.parent, TEMP_SUFFIX + ".audio", temp_owner)
    try:
        audio = add_audio(video, plan, segments, options.redaction, with_audio, cancel)
        os.replace(with_audio, video)
    finally:
        with_audio.unlink(missing_ok=True)
    notes = rendered.notes
    if audio.clips_without_audio:
        notes = (*notes, f"{audio.clips_without_audio} clip(s) without audio filled with silence")
    return replace(rendered, audio_samples=audio.samples, audio_silent=audio.silent, notes=notes)


@dataclass(frozen=True)
class RenderedCase:
    """A verified output under a temporary name, with everything needed to publish it."""

    case_id: str
    pseudonym: str
    reused_pseudonym: bool
    temp: Path
    output_sha256: str
    report: dict[str, Any]
    source_files: tuple[str, ...]
    #: The detection result to archive for review, when a detector ran.
    detections: dict[str, Any] | None
    #: The overlay regions the output was masked with, archived privately for the review screen.
    overlays: OverlaySet = NO_OVERLAYS


def render_case(request: CaseRequest, options: ProcessOptions, pseudonym: str, *, reused_pseudonym: bool = False,
                temp_owner: str = PLAIN_OWNER, progress: ProgressCallback | None = None,
                cancel: Cancel | None = None) -> RenderedCase:
    """Probe, detect, render and verify one case into a temporary file of ``<out>`` (owner tag ``temp_owner``,
    see :mod:`endoshare.storage`).

    Writes nothing else (no archive, no mapping), so that it can run on any worker; a failure deletes
    the temporary file and raises the typed error.
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    case = discover_case(request.folder, request.case_id)
    detects = options.detector != "none" and not options.segments_file
    masking = options.mask_overlays or options.overlays_file is not None
    phases = tuple(p for p in (Phase.PROBE, Phase.DETECT, Phase.OVERLAYS, Phase.RENDER, Phase.VERIFY)
                   if (p != Phase.DETECT or detects) and (p != Phase.OVERLAYS or masking))
    tracker = _Progress(progress, phases)

    def step(name: Phase) -> None:
        timings[name] = round(time.monotonic() - started - sum(timings.values()), 3)
        if cancel is not None and cancel():
            raise CancelledError(path=case.folder)

    plan = plan_join(probe_case(case, tracker.phase(Phase.PROBE)))
    step(Phase.PROBE)
    check_out_dir(options)
    finder = overlay_finder(plan, options, tracker.phase(Phase.OVERLAYS), cancel)
    segments, segment_source, detections = find_segments(plan, options, case, tracker.phase(Phase.DETECT), cancel,
                                                         finder)
    if detects:
        step(Phase.DETECT)
    overlays, text_detector = find_case_overlays(plan, options, finder)
    if masking:
        step(Phase.OVERLAYS)
    temp = new_temp_file(options.out_dir, TEMP_SUFFIX, temp_owner)
    try:
        try:
            rendered = render(plan, segments, options, temp, tracker.phase(Phase.RENDER), cancel, overlays=overlays)
            if options.keep_audio:
                rendered = _with_audio(plan, segments, options, temp, rendered, cancel, temp_owner)
            step(Phase.RENDER)
            identifiers = (case.case_id, *(p.stem for p in case.clips), case.folder.resolve().name)
            checks = verify_output(temp, rendered, identifiers, keep_audio=rendered.audio_samples is not None,
                                   mode=options.verify, sources=case.clips,
                                   progress=tracker.phase(Phase.VERIFY), cancel=cancel)
            checked_frames: tuple[int, ...] = ()
            if text_detector is not None:
                overlay_checks, checked_frames = verify_overlays(
                    temp, overlays, rendered, segments, options.redaction, plan.total_frames,
                    (plan.target.width, plan.target.height, plan.target.frame_rate), text_detector, cancel)
                checks = (*checks, *overlay_checks)
            step(Phase.VERIFY)
        except (OSError, av.error.FFmpegError) as exc:
            if getattr(exc, "errno", None) in FULL_ERRNOS:
                raise DiskFullError(f"The output folder {options.out_dir} is full (no space left on its disk or "
                                    "quota) while writing the output; free some space there and run again.",
                                    path=options.out_dir) from None
            raise
        failed = [c for c in checks if not c.passed]
        if failed:
            raise VerificationError(
                f"The output for case {case.folder} failed {len(failed)} check(s) and was not published: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed)
                + ". Please report this with the audit log; try --mode advanced.",
                path=case.folder, failed_checks=tuple(c.name for c in failed))
        digest = sha256_of(temp)
        report = _report(plan, options, pseudonym, reused_pseudonym, segments, segment_source, rendered, checks,
                         digest, timings)
        report["overlays"] = {"masking": masking, "edited_in_review": options.overlays_file is not None,
                              **overlays.to_json(),
                              "masked_regions": len(overlays.masked), "checked_output_frames": list(checked_frames)}
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return RenderedCase(case.case_id, pseudonym, reused_pseudonym, temp, digest, report,
                        tuple(p.name for p in case.clips), detections, overlays)


def output_mode(options: ProcessOptions) -> int:
    """Published files follow the umask like any file of the user; held ones stay private."""
    return PRIVATE_FILE_MODE if options.held_for_review else shared_file_mode()


def publish_case(rendered: RenderedCase, options: ProcessOptions, temp_owner: str = PLAIN_OWNER) -> CaseResult:
    """Publish a verified output, in an order that no crash or full disk can turn into a lie:

    1. the detection result and the overlay regions into the archive (replaced by a redo: harmless if the
       rest fails);
    2. the report, complete under a temporary name in the output folder (a full disk fails here);
    3. the mapping row, so that the private link exists before anything is shared;
    4. the video renamed to ``<pseudonym>.mp4`` — the commit point; if it fails, the row is withdrawn;
    5. the report renamed to its final name: a report never stands without its video.

    A redo with the same pseudonym replaces the row instead of adding one.
    """
    final = options.out_dir / f"{rendered.pseudonym}.mp4"
    report_path = options.out_dir / f"{rendered.pseudonym}.report.json"
    mode = output_mode(options)
    detections = private_dir(options.archive_dir / DETECTIONS_FOLDER)
    if rendered.detections is not None:
        write_json_atomically(detections / f"{rendered.pseudonym}.json", rendered.detections)
    write_json_atomically(overlays_path(options.archive_dir, rendered.pseudonym), rendered.overlays.to_json())
    report_temp = write_temp(options.out_dir, f".{report_path.name}.tmp", json_bytes(rendered.report), temp_owner)
    try:
        store = MappingStore(options.archive_dir)
        row = MappingRow(case_id=rendered.case_id, pseudonym=rendered.pseudonym,
                         created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                         source_files=" | ".join(rendered.source_files), output_sha256=rendered.output_sha256,
                         output_file=final.name)
        previous = store.record(row)
        try:
            publish(rendered.temp, final, mode)
        except OSError as exc:
            store.withdraw(row, previous)
            raise (full_folder_error(exc, options.out_dir, "publishing the output")
                   or OutputError(f"Cannot publish {final} ({exc.strerror or exc}); nothing was published for "
                                  "this case. Check the output folder's permissions.", path=options.out_dir)) \
                from None
        try:
            publish(report_temp, report_path, mode)
        except OSError as exc:
            raise OutputError(f"The output {final} was published but its report could not be renamed into place "
                              f"({exc.strerror or exc}); process the case again to rewrite both.",
                              path=options.out_dir) from None
    finally:
        report_temp.unlink(missing_ok=True)
    return CaseResult(rendered.case_id, CaseStatus.OK, rendered.pseudonym, final, report_path,
                      reused_pseudonym=rendered.reused_pseudonym)


def overlays_path(archive_dir: Path, pseudonym: str) -> Path:
    """Where the archive keeps the overlay regions a case's output was masked with (private: the review
    screen shows and edits them; the shared report holds a copy without the pictures)."""
    return archive_dir / DETECTIONS_FOLDER / f"{pseudonym}.overlays.json"


def choose_pseudonym(case_id: str, options: ProcessOptions, stored: str | None = None) -> tuple[str, bool]:
    """The pseudonym of a case's run: ``stored`` (a queue job's, kept across its attempts), else the case's
    earlier one (reused) unless a new one is asked for, else a new one; returns (pseudonym, reused)."""
    previous = MappingStore(options.archive_dir).lookup(case_id)
    if stored:
        return stored, stored == previous
    if previous and not options.new_pseudonym:
        return previous, True
    return new_pseudonym(), False


def remove_stale_temps(options: ProcessOptions) -> list[Path]:
    """Delete the temporary files killed runs of this machine left in the output and archive folders."""
    folders = (options.out_dir, options.archive_dir, options.archive_dir / DETECTIONS_FOLDER)
    return [path for folder in folders for path in remove_stale(folder)]


def process_case(request: CaseRequest, options: ProcessOptions, progress: ProgressCallback | None = None,
                 cancel: Cancel | None = None) -> CaseResult:
    """One case end to end, in this process: render and verify, then publish — under the case's lock, so
    that a second run of the same case at the same time fails with :class:`~endoshare.errors.CaseBusyError`."""
    case_id = discover_case(request.folder, request.case_id).case_id
    with CaseLock(options.archive_dir, case_id):
        remove_stale_temps(options)
        pseudonym, reused = choose_pseudonym(case_id, options)
        rendered = render_case(request, options, pseudonym, reused_pseudonym=reused, progress=progress,
                               cancel=cancel)
        try:
            result = publish_case(rendered, options)
        finally:
            rendered.temp.unlink(missing_ok=True)
    if progress is not None:
        progress(ProgressEvent(Phase.DONE, 1, 1, 1.0))
    return result


def _report(plan: JoinPlan, options: ProcessOptions, pseudonym: str, reused: bool,
            segments: SegmentSet, segment_source: str, rendered: RenderResult,
            checks: tuple[CheckResult, ...], digest: str, timings: dict[str, float]) -> dict[str, object]:
    return {
        "pseudonym": pseudonym,
        "pseudonym_reused": reused,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": software_versions(),
        "settings": options.to_json(),
        "inputs": input_summary(plan),
        "merged_timeline": {"frames": plan.total_frames, **plan.target.to_json(),
                            "copy_compatible": plan.copy_compatible, "normalised_because": list(plan.reasons)},
        "redaction": {"source": segment_source, "style": options.redaction.value,
                      "spans": segments.to_json(), "frames": segments.frame_count},
        "output": {"file": f"{pseudonym}.mp4", "sha256": digest, "method": rendered.method,
                   "codec": rendered.codec, "frames": rendered.frame_count,
                   "frame_rate": format_rate(rendered.frame_rate), "width": rendered.width,
                   "height": rendered.height, "notes": list(rendered.notes)},
        "checks": [c.to_json() for c in checks],
        "timings_seconds": timings,
    }


def process_cases(requests: list[CaseRequest], options: ProcessOptions,
                  progress: Callable[[int, ProgressEvent], None] | None = None,
                  cancel: Cancel | None = None) -> Iterator[CaseResult]:
    """Each case in turn; a failing case yields a failed result and the next one starts."""
    for number, request in enumerate(requests):
        callback = (lambda event, n=number: progress(n, event)) if progress is not None else None
        try:
            yield process_case(request, options, callback, cancel)
        except CancelledError:
            raise
        except EndoshareError as exc:
            yield CaseResult(request.case_id or request.folder.name, CaseStatus.FAILED, error=str(exc),
                             error_type=type(exc).__name__)
        except OSError as exc:
            yield CaseResult(request.case_id or request.folder.name, CaseStatus.FAILED,
                             error=f"{request.folder}: {exc}", error_type=type(exc).__name__)


