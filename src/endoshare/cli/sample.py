"""``endoshare sample DIR``: write a synthetic sample case with planted identifiers (for demos and trials)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sample import make_sample_case
from ..types import ExitCode


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sample", help="write a synthetic sample case (3 clips with planted identifiers and out-of-body scenes)")
    parser.add_argument("folder", type=Path, metavar="DIR", help="where to write the case folder and its truth")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    case = make_sample_case(args.folder, width=args.width, height=args.height)
    print(f"case folder:   {case.folder}")
    print(f"clips:         {', '.join(p.name for p in case.clips)}")
    print(f"planted text:  {case.planted!r} (in the folder name, tags, handler name and SEI user data)")
    print(f"out-of-body:   {case.segments.frame_count} of {len(case.labels)} frames, spans "
          + ", ".join(f"[{s.start_frame}, {s.end_frame})" for s in case.segments))
    print(f"ground truth:  {args.folder / 'truth.json'} and {args.folder / 'segments.json'}")
    return ExitCode.OK
