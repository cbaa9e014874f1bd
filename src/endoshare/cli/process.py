"""``endoshare process CASE_DIR...``: de-identify whole cases."""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ..errors import EndoshareError
from ..pipeline import MODES, CaseResult, CaseStatus, ProcessOptions
from ..render.common import ENCODERS, X264_PRESETS, EncodeSettings, Redaction
from ..timeline import parse_rate
from ..types import ExitCode
from ..verify import VERIFY_MODES

if TYPE_CHECKING:
    from ..jobs.queue import Job


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "process", help="de-identify one or more cases (each a folder of clips)",
        description="Each CASE_DIR is one case: its video files are ordered naturally (VID2 before VID10), "
                    "merged, redacted, scrubbed of metadata, verified and written as <pseudonym>.mp4 "
                    "with <pseudonym>.report.json into --out. The patient ID → pseudonym mapping goes "
                    "into --archive/mapping.csv.")
    parser.add_argument("cases", nargs="+", type=Path, metavar="CASE_DIR")
    parser.add_argument("--archive", type=Path, required=True,
                        help="private folder for the mapping file and detection results (never share it)")
    add_process_arguments(parser)
    parser.add_argument("--workers", type=int,
                        help="cases processed at once when several are given (default: from CPU count and memory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every case's result")
    parser.set_defaults(func=run)


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of one case's processing, shared by ``process`` and ``queue add``."""
    parser.add_argument("--out", type=Path, required=True, help="shared folder for the de-identified videos")
    parser.add_argument("--case-id", help="patient/case identifier (default: the folder name); "
                                          "only with a single CASE_DIR")
    defaults = ProcessOptions.default("encode")
    parser.add_argument("--mode", choices=MODES, default=ProcessOptions.default("mode"),
                        help="fast: stream-copy when nothing must change; advanced: always re-encode")
    parser.add_argument("--redact", choices=[r.value for r in Redaction],
                        default=ProcessOptions.default("redaction").value,
                        help="how out-of-body frames are hidden (default: %(default)s)")
    parser.add_argument("--segments", type=Path, metavar="FILE.json",
                        help="out-of-body spans in frames of the merged timeline (overrides detection)")
    parser.add_argument("--detector", default=ProcessOptions.default("detector"),
                        help="out-of-body detector: builtin, oobnet, or none to skip detection (default: %(default)s)")
    parser.add_argument("--weights", type=Path, help="weights file for the detector")
    parser.add_argument("--margin", type=Fraction, default=ProcessOptions.default("margin_seconds"), metavar="SECONDS",
                        help="widen each detected span by this much on both sides "
                             f"(default {float(ProcessOptions.default('margin_seconds')):g})")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default=defaults.codec, help="codec when re-encoding")
    parser.add_argument("--crf", type=int, help="quality when re-encoding (lower is better)")
    parser.add_argument("--preset", choices=X264_PRESETS, default=defaults.preset,
                        help="encoder speed/size trade-off")
    parser.add_argument("--fps", help="output frame rate when re-encoding, e.g. 25 or 30000/1001")
    parser.add_argument("--height", type=int, help="output height in pixels when re-encoding")
    parser.add_argument("--verify", choices=VERIFY_MODES, default=ProcessOptions.default("verify"),
                        help="changes (default): decode what was re-encoded and both sides of every splice and "
                             "clip join, prove every copied packet equal to its source packet; full: decode "
                             "every output frame; splices: decode what changed and every keyframe")
    parser.add_argument("--keep-audio", action="store_true",
                        help="keep the clips' audio, silenced (or cut) wherever the video is redacted; "
                             "dropped by default because operating-room audio carries names")
    parser.add_argument("--no-overlay-mask", dest="mask_overlays", action="store_false",
                        help="do not look for burned-in text (recorder overlays: name, date of birth, ID); "
                             "by default every overlay found is filled with black")
    parser.add_argument("--overlays", type=Path, metavar="FILE.json",
                        help="burned-in text regions to mask, in pixels and frames of the merged timeline (as "
                             "the report's 'overlays' section; overrides the overlay finder; checked after)")
    parser.add_argument("--keep-device-settings", action="store_true",
                        help="leave overlays that read as device settings only (pressure, flow, light) visible")
    parser.add_argument("--new-pseudonym", action="store_true",
                        help="give a case that was processed before a new pseudonym")


def options_from_args(args: argparse.Namespace) -> ProcessOptions:
    encode = EncodeSettings(codec=args.codec, crf=args.crf, preset=args.preset,
                            frame_rate=parse_rate(args.fps) if args.fps else None, height=args.height)
    return ProcessOptions(out_dir=args.out, archive_dir=args.archive, mode=args.mode,
                          redaction=Redaction(args.redact), segments_file=args.segments,
                          detector=args.detector, weights=args.weights, encode=encode,
                          new_pseudonym=args.new_pseudonym, verify=args.verify, keep_audio=args.keep_audio,
                          margin_seconds=args.margin, mask_overlays=args.mask_overlays,
                          keep_device_settings=args.keep_device_settings, overlays_file=args.overlays)


def run(args: argparse.Namespace) -> int:
    from ..jobs.runner import check_workers

    if args.case_id is not None and len(args.cases) != 1:
        print("endoshare process: --case-id needs exactly one CASE_DIR", file=sys.stderr)
        return ExitCode.USAGE
    try:
        options = options_from_args(args)
        check_workers(args.workers)
    except ValueError as exc:          # every invalid option, before anything is queued or written
        print(f"endoshare process: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    show_bar = not args.json and sys.stderr.isatty()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                      disable=not show_bar, transient=True) as bar:
            results = _run_cases(args, options, bar)
    except EndoshareError as exc:      # the archive or its queue cannot be used (full, not writable...)
        print(f"endoshare process: {exc}", file=sys.stderr)
        return ExitCode.SOME_FAILED
    for result in results:
        if args.json:
            continue
        if result.status == CaseStatus.OK:
            note = " (pseudonym reused)" if result.reused_pseudonym else ""
            print(f"ok      {result.case_id} → {result.output}{note}")
        else:
            print(f"FAILED  {result.case_id}: {result.error}", file=sys.stderr)
    if args.json:
        print(json.dumps({"cases": [r.to_json() for r in results]}, ensure_ascii=False))
    return ExitCode.OK if all(r.status == CaseStatus.OK for r in results) else ExitCode.SOME_FAILED


def _run_cases(args: argparse.Namespace, options: ProcessOptions, bar: Progress) -> list[CaseResult]:
    """The cases go through the archive's job queue, with its audit log and case locks: a crash loses
    nothing (``endoshare queue run`` finishes what is left).  One case renders in a thread of this process,
    several in worker processes."""
    from ..jobs import QueueEvent, process_batch, process_one

    several = len(args.cases) > 1
    task = bar.add_task(f"{len(args.cases)} cases" if several else "case", total=1.0)

    def on_event(event: QueueEvent) -> None:
        description = (f"{event.jobs_finished}/{event.jobs_total} cases done" if several
                       else f"case: {event.phase or ''}")
        bar.update(task, completed=event.overall_fraction, description=description)

    if several:
        jobs = process_batch(args.cases, options, workers=args.workers, on_event=on_event)
    else:
        jobs = [process_one(args.cases[0], options, case_id=args.case_id, on_event=on_event)]
    return [_result(job) for job in jobs]


def _result(job: Job) -> CaseResult:
    from ..jobs.queue import JobState

    if job.state != JobState.DONE:
        return CaseResult(job.case_id, CaseStatus.FAILED, error=job.error or job.state, error_type=job.error_type)
    reused = False
    try:
        reused = bool(json.loads(job.report.read_text(encoding="utf-8")).get("pseudonym_reused")) if job.report \
            else False
    except (OSError, ValueError):
        pass
    return CaseResult(job.case_id, CaseStatus.OK, job.pseudonym, job.output, job.report, reused_pseudonym=reused)
