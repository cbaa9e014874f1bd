"""Command line: parse arguments, call the core library, map results to exit codes.

Exit codes: 0 every case succeeded, 1 some case failed, 2 usage error.  Each sub-command lives in
its own module exposing ``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..types import ExitCode

#: Sub-command modules, in the order ``endoshare --help`` lists them.
COMMAND_MODULES = ("process", "queue", "inspect", "detect", "eval", "models", "sample", "gui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endoshare",
        description="De-identify surgical videos: merge a case's clips, redact out-of-body scenes, "
                    "strip metadata, pseudonymise and verify the result.")
    parser.add_argument("--version", action="version", version=f"endoshare {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command's ``func``; Ctrl-C is :attr:`ExitCode.INTERRUPTED`."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("endoshare: interrupted; no partial output was published.", file=sys.stderr)
        return ExitCode.INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
