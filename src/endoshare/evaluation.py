"""Score labelled still images with a detector and measure how well it separates out-of-body frames.

The stills table is a tab-separated file with a header; it needs the columns ``file`` (relative to
the table's folder, or absolute) and ``label``; other columns (source, licence, notes) are kept.
``oob`` is the positive class, ``inbody`` the negative one; every other label is reported as the
share of its frames the detector flags, because those frames have no single right answer.

Images are resized exactly as the video path does it: PyAV ``reformat`` of the full frame to the
detector's ``input_size`` (PyAV's default, bilinear, interpolation), so figures measured here carry over.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .detect.base import SHRINK_HOOK, Detector
from .errors import CancelledError, InputError, MissingInputError, UnreadableMediaError
from .media.frames import picture_array
from .types import Cancel, Progress

POSITIVE_LABEL = "oob"
NEGATIVE_LABEL = "inbody"
_REQUIRED_COLUMNS = ("file", "label")
_BATCH = 64


@dataclass(frozen=True)
class LabelledStill:
    path: Path
    label: str
    source_repo: str = ""
    source_path: str = ""
    license: str = ""


@dataclass(frozen=True)
class LabelFigures:
    """How a label other than ``oob``/``inbody`` fared: how many frames, which share was flagged."""

    label: str
    count: int
    flagged_share: float

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "count": self.count, "flagged_share": self.flagged_share}


@dataclass(frozen=True)
class EvaluationResult:
    detector: str
    threshold: float
    #: Share of ``oob`` frames flagged (score >= threshold): the privacy figure.
    oob_recall: float
    #: Share of ``inbody`` frames not flagged (true negatives / inbody): the usefulness figure.
    inbody_kept: float
    #: Area under the ROC curve of ``oob`` against ``inbody`` (nan if either class is absent).
    roc_auc: float
    n_oob: int
    n_inbody: int
    other_labels: tuple[LabelFigures, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"detector": self.detector, "threshold": self.threshold, "oob_recall": self.oob_recall,
                "inbody_kept": self.inbody_kept, "roc_auc": self.roc_auc, "n_oob": self.n_oob,
                "n_inbody": self.n_inbody, "other_labels": [f.to_json() for f in self.other_labels]}


def read_stills_table(table: str | Path) -> tuple[LabelledStill, ...]:
    """Parse a labelled-stills TSV; every listed image must exist."""
    table = Path(table)
    if not table.is_file():
        raise MissingInputError(f"labelled-stills table {table} does not exist; give the path of a "
                                "TSV file with 'file' and 'label' columns", path=table)
    try:
        with table.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t"))
            fields = tuple(rows[0].keys()) if rows else ()
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"labelled-stills table {table} is not a UTF-8 tab-separated file ({exc})",
                         path=table) from exc
    missing = [c for c in _REQUIRED_COLUMNS if c not in fields]
    if not rows or missing:
        raise InputError(f"labelled-stills table {table} has no rows or lacks the column(s) "
                         f"{', '.join(missing or _REQUIRED_COLUMNS)}; its header must name at least "
                         "'file' and 'label' (tab-separated)", path=table)
    stills = []
    for line, row in enumerate(rows, start=2):
        name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if not name or not label:
            raise InputError(f"{table}, line {line}: empty 'file' or 'label'; fill both or delete the row",
                             path=table)
        path = Path(name) if Path(name).is_absolute() else table.parent / name
        if not path.is_file():
            raise MissingInputError(f"{table}, line {line}: image {path} does not exist; fix the 'file' "
                                    "column (paths are relative to the table's folder)", path=path)
        stills.append(LabelledStill(path, label, row.get("source_repo") or "", row.get("source_path") or "",
                                    row.get("license") or ""))
    return tuple(stills)


def load_still(path: str | Path, size: tuple[int, int] | None) -> npt.NDArray[np.uint8]:
    """Decode an image file and resize the whole picture to ``size`` = (width, height) (None: keep
    its size), RGB uint8."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return picture_array(frame) if size is None else picture_array(frame, *size)
    except (av.FFmpegError, StopIteration, IndexError, ValueError) as exc:
        raise UnreadableMediaError(f"image {path} cannot be decoded ({exc}); replace it with a valid "
                                   "PNG or JPEG file or remove it from the table", path=path) from exc


def load_stills(stills: Sequence[LabelledStill], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    width, height = size
    if not stills:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack([load_still(s.path, size) for s in stills])


def roc_auc(scores: npt.ArrayLike, positives: npt.ArrayLike) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; tied scores count one half."""
    scores_arr = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positives, dtype=bool).ravel()
    if scores_arr.shape != positive.shape:
        raise ValueError("scores and labels must have the same length")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores_arr, kind="mergesort")
    sorted_scores = scores_arr[order]
    ranks = np.empty(len(scores_arr), dtype=np.float64)
    # Tied scores share the mean of the ranks they span.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(sorted_scores)]
    mean_ranks = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mean_ranks, ends - starts)
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_scores(labels: Sequence[str], scores: npt.ArrayLike, threshold: float,
                    detector: str = "") -> EvaluationResult:
    """The figures for given per-frame labels and scores (flagged means score >= threshold)."""
    labels_arr = np.asarray(labels, dtype=object)
    scores_arr = np.asarray(scores, dtype=np.float64)
    if labels_arr.shape != scores_arr.shape:
        raise ValueError("labels and scores must have the same length")
    flagged = scores_arr >= threshold
    is_oob = labels_arr == POSITIVE_LABEL
    is_inbody = labels_arr == NEGATIVE_LABEL
    n_oob, n_inbody = int(is_oob.sum()), int(is_inbody.sum())
    both = is_oob | is_inbody
    others = tuple(
        LabelFigures(str(label), int((labels_arr == label).sum()),
                     float(flagged[labels_arr == label].mean()))
        for label in sorted(set(labels_arr.tolist()) - {POSITIVE_LABEL, NEGATIVE_LABEL}))
    return EvaluationResult(
        detector=detector, threshold=float(threshold),
        oob_recall=float(flagged[is_oob].mean()) if n_oob else float("nan"),
        inbody_kept=float((~flagged[is_inbody]).mean()) if n_inbody else float("nan"),
        roc_auc=roc_auc(scores_arr[both], is_oob[both]),
        n_oob=n_oob, n_inbody=n_inbody, other_labels=others)


def score_stills(stills: Sequence[LabelledStill], detector: Detector,
                 progress: Progress | None = None,
                 cancelled: Cancel | None = None) -> npt.NDArray[np.float32]:
    """Each still scored on its own (a stateful detector is reset before every image); ``progress(done,
    total)`` after each scored batch, ``cancelled()`` polled between batches."""
    scores: list[npt.NDArray[np.float32]] = []
    batch = 1 if detector.stateful else _BATCH
    for start in range(0, len(stills), batch):
        if cancelled is not None and cancelled():
            raise CancelledError("evaluation cancelled by the user; nothing was written")
        chunk = stills[start:start + batch]
        if detector.stateful:
            detector.reset()
        shrink = getattr(detector, SHRINK_HOOK, None)
        frames = (np.stack([shrink(load_still(s.path, None)[None])[0] for s in chunk]) if shrink is not None
                  else load_stills(chunk, detector.input_size))
        scores.append(np.asarray(detector.score(frames), np.float32))
        if progress is not None:
            progress(start + len(chunk), len(stills))
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def evaluate_detector(table: str | Path, detector: Detector, threshold: float | None = None,
                      progress: Progress | None = None,
                      cancelled: Cancel | None = None) -> EvaluationResult:
    """Read the table, score every still with ``detector`` and compute the figures."""
    stills = read_stills_table(table)
    scores = score_stills(stills, detector, progress, cancelled)
    chosen = detector.threshold if threshold is None else threshold
    return evaluate_scores([s.label for s in stills], scores, chosen, detector.name)

