"""``endoshare eval``: how well a detector separates labelled still images (out-of-body vs in-body).

``--json`` prints one object: ``oob_recall``, ``inbody_kept``, ``roc_auc``, ``n_oob``, ``n_inbody``,
``threshold``, ``detector``, ``table`` and ``other_labels`` (share flagged for every other label).
Figures that cannot be computed (no frame of a class) are ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import EndoshareError
from ..types import ExitCode
from .argtypes import probability

if TYPE_CHECKING:
    from ..evaluation import EvaluationResult


@dataclass(frozen=True)
class StillsEvalCommand:
    table: Path
    detector: str
    weights: Path | None
    threshold: float | None
    as_json: bool
    show_progress: bool


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..detect.registry import DETECTOR_NAMES

    parser = subparsers.add_parser(
        "eval", help="measure a detector on labelled still images (frames.tsv)",
        description="Score every image listed in FRAMES.tsv (tab-separated, columns 'file' relative to the "
                    "table's folder and 'label') and report the recall of 'oob' frames, the share of "
                    "'inbody' frames kept, the ROC AUC, and the share flagged for every other label.")
    parser.add_argument("table", type=Path, metavar="FRAMES.tsv")
    parser.add_argument("--detector", choices=DETECTOR_NAMES, default="builtin",
                        help="out-of-body detector (default: builtin)")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="weights file of the detector (default: its usual place; see `endoshare models`)")
    parser.add_argument("--threshold", type=probability, metavar="P",
                        help="score at which a frame counts as out of body (default: the detector's)")
    parser.add_argument("--json", action="store_true", dest="as_json", help="print the figures as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = StillsEvalCommand(table=args.table, detector=args.detector, weights=args.weights,
                                threshold=args.threshold, as_json=bool(args.as_json),
                                show_progress=not args.as_json and sys.stderr.isatty())
    return eval_stills_command(command, sys.stdout, sys.stderr)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def result_json(result: EvaluationResult, table: Path) -> dict[str, object]:
    """The evaluation as strict JSON (NaN becomes null)."""
    return {**result.to_json(), "oob_recall": _finite_or_none(result.oob_recall),
            "inbody_kept": _finite_or_none(result.inbody_kept), "roc_auc": _finite_or_none(result.roc_auc),
            "table": str(table)}


def _progress_bar(err: TextIO) -> tuple[Any, Callable[[int, int], None]]:
    """A rich progress bar on stderr, fed with the number of stills scored."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("scoring stills"), BarColumn(), MofNCompleteColumn(),
                   console=Console(file=err), transient=True)
    task = bar.add_task("score", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
    return bar, update


def eval_stills_command(command: StillsEvalCommand, out: TextIO, err: TextIO) -> int:
    from ..detect.registry import create_detector
    from ..evaluation import evaluate_detector

    progress_bar, callback = _progress_bar(err) if command.show_progress else (None, None)
    try:
        detector = create_detector(command.detector, command.weights)
        if progress_bar is not None:
            progress_bar.start()
        try:
            result = evaluate_detector(command.table, detector, command.threshold, progress=callback)
        finally:
            if progress_bar is not None:
                progress_bar.stop()
    except (EndoshareError, OSError, ValueError) as exc:
        err.write(f"endoshare eval: {exc}\n")
        return ExitCode.USAGE

    if command.as_json:
        out.write(json.dumps(result_json(result, command.table)) + "\n")
        return ExitCode.OK

    def share(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"
    out.write(f"{command.table} (detector {result.detector}, threshold {result.threshold:.4f})\n"
              f"  out-of-body recall:  {share(result.oob_recall)} of {result.n_oob} 'oob' frames\n"
              f"  in-body kept:        {share(result.inbody_kept)} of {result.n_inbody} 'inbody' frames\n"
              f"  ROC AUC:             {'n/a' if math.isnan(result.roc_auc) else f'{result.roc_auc:.4f}'}\n")
    if result.other_labels:
        out.write("  other labels (share flagged as out of body):\n")
        for figures in result.other_labels:
            out.write(f"    {figures.label:<24} {share(figures.flagged_share):>8}  of {figures.count}\n")
    return ExitCode.OK
