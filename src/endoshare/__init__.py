"""Endoshare: turn raw surgical recordings into videos that can be shared without exposing anyone.

The public API is what this package exports (``__all__``); everything else may change between releases.
Process one case::

    from endoshare import CaseRequest, ProcessOptions, process_case

    options = ProcessOptions(out_dir=Path("shared"), archive_dir=Path("archive"))
    result = process_case(CaseRequest(Path("cases/P001")), options)
    print(result.status, result.pseudonym, result.output)

- **One case**: :func:`process_case` (in this process; ``progress`` and ``cancel`` callbacks) with
  :class:`CaseRequest`, :class:`ProcessOptions` (every setting, validated when built), :class:`Redaction`,
  :class:`EncodeSettings`; it returns a :class:`CaseResult` or raises one of the errors below.
- **Many cases, crash-safe**: :func:`process_batch` (worker processes), or a :class:`JobQueue` in the
  archive with :func:`add_job` and :func:`run_queue` (what ``endoshare queue`` does); :class:`QueueEvent`
  reports progress, :class:`JobState` is where each job is.
- **Detection only**: :func:`create_detector` (``"builtin"`` or ``"oobnet"``), :func:`detect_video` with
  :class:`DetectOptions`, giving a :class:`DetectionResult` whose ``segments`` is a :class:`SegmentSet`
  (frame-exact spans, JSON-serialisable: edit it and pass it back through ``ProcessOptions.segments_file``).
- **Inspect**: :func:`probe` (a :class:`MediaInfo`: streams, tags, chapters, SEI user data) and
  :func:`find_removable` (what the scrubber would remove); :func:`verify_output` re-checks an output.
- **Errors**: every error derives from :class:`EndoshareError` and from the matching built-in exception
  (see :mod:`endoshare.errors`); each message names the file and says what to do.
- **Callbacks**: :data:`Progress` (``done, total``) and :data:`Cancel` (polled; ``True`` stops the work
  with :class:`CancelledError`).

Importing the package is cheap: each name loads its module the first time it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → the module that defines it.
_EXPORTS = {
    **dict.fromkeys(("CaseRequest", "CaseResult", "CaseStatus", "ProcessOptions", "ProgressEvent", "process_case"),
                    "pipeline"),
    **dict.fromkeys(("EncodeSettings", "Redaction"), "render.common"),
    **dict.fromkeys(("add_job", "process_batch", "run_queue", "QueueEvent", "QueueEventKind", "RunSummary"),
                    "jobs.runner"),
    **dict.fromkeys(("JobQueue", "Job", "JobState"), "jobs.queue"),
    **dict.fromkeys(("create_detector", "list_detectors"), "detect.registry"),
    **dict.fromkeys(("detect_video", "DetectOptions", "DetectionResult"), "detect.run"),
    **dict.fromkeys(("Segment", "SegmentSet"), "timeline"),
    **dict.fromkeys(("probe", "MediaInfo"), "media.probe"),
    "find_removable": "media.findings",
    **dict.fromkeys(("verify_output", "CheckResult"), "verify"),
    **dict.fromkeys(("Progress", "Cancel"), "types"),
    **dict.fromkeys(("EndoshareError", "MissingInputError", "InputError", "NoVideoFilesError", "EmptyFileError",
                     "UnreadableMediaError", "NoVideoStreamError", "SegmentsFileError", "OptionsError",
                     "InputPermissionError", "OutputError", "DiskFullError", "VerificationError", "WeightsError",
                     "MappingError", "CaseBusyError", "CancelledError"), "errors"),
}

__all__ = [
    "__version__", "Cancel", "CancelledError", "CaseBusyError", "CaseRequest", "CaseResult", "CaseStatus",
    "CheckResult", "DetectOptions", "DetectionResult", "DiskFullError", "EmptyFileError", "EncodeSettings",
    "EndoshareError", "InputError", "InputPermissionError", "Job", "JobQueue", "JobState", "MappingError",
    "MediaInfo", "MissingInputError", "NoVideoFilesError", "NoVideoStreamError", "OptionsError", "OutputError",
    "ProcessOptions", "Progress", "ProgressEvent", "QueueEvent", "QueueEventKind", "Redaction", "RunSummary",
    "Segment", "SegmentSet", "SegmentsFileError", "UnreadableMediaError", "VerificationError", "WeightsError",
    "add_job", "create_detector", "detect_video", "find_removable", "list_detectors", "probe", "process_batch",
    "process_case", "run_queue", "verify_output",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'endoshare' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value          # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:       # what type checkers and IDEs see; at run time __getattr__ loads each on first use
    from .detect.registry import create_detector, list_detectors
    from .detect.run import DetectionResult, DetectOptions, detect_video
    from .errors import (
        CancelledError,
        CaseBusyError,
        DiskFullError,
        EmptyFileError,
        EndoshareError,
        InputError,
        InputPermissionError,
        MappingError,
        MissingInputError,
        NoVideoFilesError,
        NoVideoStreamError,
        OptionsError,
        OutputError,
        SegmentsFileError,
        UnreadableMediaError,
        VerificationError,
        WeightsError,
    )
    from .jobs.queue import Job, JobQueue, JobState
    from .jobs.runner import QueueEvent, QueueEventKind, RunSummary, add_job, process_batch, run_queue
    from .media.findings import find_removable
    from .media.probe import MediaInfo, probe
    from .pipeline import CaseRequest, CaseResult, CaseStatus, ProcessOptions, ProgressEvent, process_case
    from .render.common import EncodeSettings, Redaction
    from .timeline import Segment, SegmentSet
    from .types import Cancel, Progress
    from .verify import CheckResult, verify_output
