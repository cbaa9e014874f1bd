"""``endoshare models``: which detectors exist, whether each can run, and where its weights are."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import TextIO

from ..types import ExitCode


@dataclass(frozen=True)
class ModelsOptions:
    as_json: bool


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "models", help="list the out-of-body detectors and whether their weights are present",
        description="List the out-of-body detectors, whether each is ready to run, and where its "
                    "weights file is (or should be). Nothing is downloaded.")
    parser.add_argument("--json", action="store_true", dest="as_json",
                        help="print the list as JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return list_models(ModelsOptions(as_json=bool(args.as_json)), sys.stdout)


def list_models(options: ModelsOptions, out: TextIO) -> int:
    from ..detect.registry import list_detectors

    infos = [dataclasses.asdict(info) for info in list_detectors()]
    if options.as_json:
        json.dump({"detectors": infos}, out, indent=2)
        out.write("\n")
        return ExitCode.OK
    for info in infos:
        state = "ready" if info["ready"] else "NOT READY"
        out.write(f"{info['name']}: {state}\n")
        out.write(f"  {info['description']}\n")
        out.write(f"  weights: {info['weights_path'] or '(none needed)'}\n")
        if info.get("problem"):
            out.write(f"  problem: {info['problem']}\n")
    return ExitCode.OK
