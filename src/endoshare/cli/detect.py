"""``endoshare detect`` and ``endoshare eval-video``: out-of-body spans of videos, and their accuracy.

``detect --json`` prints JSON Lines: one object per input, in the order given, each on its own line —
``{"input", "frame_count", "frame_rate", "detector", "segments", "options", "stats"}`` (plus
``"scores"`` with ``--scores``), or ``{"input", "error", "error_type"}`` for an input that failed.
One line saved to a file is a valid ``--segments`` file for the render commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from ..detect.sampling import COARSE_FRAMES
from ..detect.smooth import DEFAULT_MARGIN_SECONDS
from ..errors import EndoshareError
from ..timeline import format_rate
from ..types import ExitCode
from .argtypes import probability


@dataclass(frozen=True)
class DetectCommand:
    inputs: tuple[Path, ...]
    detector: str
    weights: Path | None
    margin_seconds: Fraction
    fill_gap_seconds: Fraction
    enter_threshold: float | None
    exit_threshold: float | None
    strategy: str
    step: int
    scores: bool
    as_json: bool
    show_progress: bool
    coarse_frames: str = "keyframes"


@dataclass(frozen=True)
class EvalCommand:
    video: Path
    truth: Path
    detector: str
    weights: Path | None
    margin_seconds: Fraction
    strategy: str
    as_json: bool


def _seconds(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 0.5 or 1/2)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seconds must not be negative, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    from ..detect.registry import DETECTOR_NAMES
    from ..detect.run import STRATEGIES

    parser.add_argument("--detector", choices=DETECTOR_NAMES, default="builtin",
                        help="out-of-body detector (default: builtin)")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="weights file of the detector (default: its usual place; see `endoshare models`)")
    parser.add_argument("--margin", type=_seconds, default=DEFAULT_MARGIN_SECONDS, metavar="SECONDS",
                        help="safety margin added before and after each span "
                             f"(default {float(DEFAULT_MARGIN_SECONDS):g}; rounded up to whole frames)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="auto (default): keyframes first, then every frame of suspicious GOPs for a "
                             "stateless detector; every frame in order for a stateful one (oobnet)")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    detect = subparsers.add_parser(
        "detect", help="find out-of-body spans in videos (frame indices)",
        description="Find the out-of-body spans of each video, in frame indices (presentation order, "
                    "from 0; end exclusive), with a safety margin. Nothing is written except to stdout.")
    detect.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    _add_detector_arguments(detect)
    detect.add_argument("--fill-gap", type=_seconds, default=Fraction(1), metavar="SECONDS",
                        help="also redact in-body gaps of at most this long between two spans (default 1)")
    detect.add_argument("--threshold", type=probability, metavar="P",
                        help="score at which a frame counts as out of body (default: the detector's)")
    detect.add_argument("--exit-threshold", type=probability, metavar="P",
                        help="hysteresis: a span continues while scores stay at or above P (lower than "
                             "--threshold); default: no hysteresis")
    detect.add_argument("--coarse", choices=COARSE_FRAMES, default="keyframes", dest="coarse_frames",
                        help="coarse-to-fine: decode keyframes only and trust packet-size cues between them "
                             "(default), or every reference picture (slower, sees a short excursion directly)")
    detect.add_argument("--step", type=_positive_int, default=1, metavar="N",
                        help="sequential strategy: score one frame out of N (default 1 = every frame)")
    detect.add_argument("--scores", action="store_true",
                        help="with --json, include every scored frame index and its score")
    detect.add_argument("--json", action="store_true", dest="as_json",
                        help="print one JSON object per input, one per line (JSON Lines)")
    detect.set_defaults(func=run_detect)

    evaluate = subparsers.add_parser(
        "eval-video", help="compare detected spans of one video with per-frame truth labels",
        description='Detect out-of-body spans of VIDEO and compare them with TRUTH.json, '
                    '{"labels": ["inbody" | "oob" | "transition", ...]} with one label per frame. '
                    'Prints the share of out-of-body frames redacted (recall) and of in-body frames kept; '
                    '"transition" frames count for neither.')
    evaluate.add_argument("video", type=Path, metavar="VIDEO")
    evaluate.add_argument("truth", type=Path, metavar="TRUTH.json")
    _add_detector_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", dest="as_json", help="print the figures as JSON")
    evaluate.set_defaults(func=run_eval)


def run_detect(args: argparse.Namespace) -> int:
    command = DetectCommand(
        inputs=tuple(args.videos), detector=args.detector, weights=args.weights, margin_seconds=args.margin,
        fill_gap_seconds=args.fill_gap, enter_threshold=args.threshold, exit_threshold=args.exit_threshold,
        strategy=args.strategy,
        step=args.step, scores=bool(args.scores), as_json=bool(args.as_json),
        show_progress=not args.as_json and sys.stderr.isatty(), coarse_frames=args.coarse_frames)
    return detect_command(command, sys.stdout, sys.stderr)


def run_eval(args: argparse.Namespace) -> int:
    command = EvalCommand(video=args.video, truth=args.truth, detector=args.detector, weights=args.weights,
                          margin_seconds=args.margin, strategy=args.strategy, as_json=bool(args.as_json))
    return eval_command(command, sys.stdout, sys.stderr)


def _error_object(path: Path, exc: BaseException) -> dict[str, Any]:
    return {"input": str(path), "error": str(exc), "error_type": type(exc).__name__}


def _progress_bar(err: TextIO) -> tuple[Any, Callable[[Path], Callable[[Any], None]]]:
    """A rich progress bar on stderr fed with the core's measured work."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        console=Console(file=err), transient=True)

    def for_file(path: Path) -> Callable[[Any], None]:
        tasks: dict[str, Any] = {}

        def update(event: Any) -> None:
            if event.phase not in tasks:
                tasks[event.phase] = progress.add_task(f"{path.name}: {event.phase}", total=event.total)
            progress.update(tasks[event.phase], completed=event.done, total=event.total)
        return update
    return progress, for_file


def detect_command(command: DetectCommand, out: TextIO, err: TextIO) -> int:
    from ..detect.registry import create_detector
    from ..detect.run import DetectOptions, detect_video
    from ..detect.smooth import SmoothingOptions

    try:
        detector = create_detector(command.detector, command.weights)
    except (EndoshareError, ValueError, FileNotFoundError) as exc:
        for path in command.inputs:
            _emit_error(command.as_json, path, exc, out, err)
        return ExitCode.SOME_FAILED
    try:
        options = DetectOptions(
            smoothing=SmoothingOptions(enter_threshold=command.enter_threshold,
                                       exit_threshold=command.exit_threshold,
                                       margin_seconds=command.margin_seconds,
                                       fill_gap_seconds=command.fill_gap_seconds),
            strategy=command.strategy,  # type: ignore[arg-type]
            sequential_step=command.step, coarse_frames=command.coarse_frames)
    except ValueError as exc:
        err.write(f"endoshare detect: {exc}\n")
        return ExitCode.USAGE
    bar, for_file = _progress_bar(err) if command.show_progress else (None, None)
    failed = 0
    if bar is not None:
        bar.start()
    try:
        for path in command.inputs:
            try:
                result = detect_video(path, detector, options, progress=for_file(path) if for_file else None)
            except EndoshareError as exc:
                failed += 1
                _emit_error(command.as_json, path, exc, out, err)
                continue
            if command.as_json:
                out.write(json.dumps(result.to_json(scores=command.scores)) + "\n")
                out.flush()
            else:
                _print_table(result, out)
    finally:
        if bar is not None:
            bar.stop()
    return ExitCode.SOME_FAILED if failed else ExitCode.OK


def _emit_error(as_json: bool, path: Path, exc: BaseException, out: TextIO, err: TextIO) -> None:
    if as_json:
        out.write(json.dumps(_error_object(path, exc)) + "\n")
        out.flush()
    else:
        err.write(f"endoshare detect: {path}: {exc}\n")


def _clock(frames: int, rate: Fraction) -> str:
    seconds = Fraction(frames) / rate
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{millis:03d}"


def _print_table(result: Any, out: TextIO) -> None:
    stats = result.stats
    out.write(f"{result.input}: {result.frame_count} frames at {format_rate(result.frame_rate)} fps, "
              f"detector {result.detector}, {len(result.segments)} out-of-body span(s), "
              f"{result.segments.frame_count} frames redacted "
              f"({stats.frames_decoded} frames decoded in {stats.seconds_total:.2f} s)\n")
    if result.segments:
        out.write(f"  {'start':>8} {'end':>8} {'frames':>7}  {'from':>12} {'to':>12}\n")
    for seg in result.segments:
        out.write(f"  {seg.start_frame:>8} {seg.end_frame:>8} {seg.length:>7}  "
                  f"{_clock(seg.start_frame, result.frame_rate):>12} {_clock(seg.end_frame, result.frame_rate):>12}\n")


def eval_command(command: EvalCommand, out: TextIO, err: TextIO) -> int:
    from ..detect.registry import create_detector
    from ..detect.run import (
        DetectOptions,
        detect_video,
        evaluate_segments,
        load_truth_labels,
    )
    from ..detect.smooth import SmoothingOptions

    try:
        labels = load_truth_labels(command.truth)
        detector = create_detector(command.detector, command.weights)
        options = DetectOptions(smoothing=SmoothingOptions(margin_seconds=command.margin_seconds),
                                strategy=command.strategy)  # type: ignore[arg-type]
        result = detect_video(command.video, detector, options)
        figures = evaluate_segments(result.segments, labels, result.frame_count, command.truth)
    except (EndoshareError, ValueError) as exc:
        if command.as_json:
            out.write(json.dumps(_error_object(command.video, exc)) + "\n")
        else:
            err.write(f"endoshare eval-video: {exc}\n")
        return ExitCode.SOME_FAILED
    if command.as_json:
        out.write(json.dumps({"input": str(command.video), "truth": str(command.truth),
                              "detector": result.detector, **figures.to_json(),
                              "segments": result.segments.to_json()}) + "\n")
        return ExitCode.OK

    def share(value: float | None) -> str:
        return "n/a (none in truth)" if value is None else f"{100 * value:.2f} %"
    out.write(f"{command.video} against {command.truth} (detector {result.detector}, {figures.frame_count} frames)\n"
              f"  out-of-body frames redacted (recall): {share(figures.oob_recall)} "
              f"({figures.oob_redacted}/{figures.oob_frames}; {figures.missed_oob_frames} missed)\n"
              f"  in-body frames kept:                  {share(figures.inbody_kept_fraction)} "
              f"({figures.inbody_kept}/{figures.inbody_frames})\n"
              f"  transition frames (not counted):      {figures.transition_frames}\n")
    return ExitCode.OK
