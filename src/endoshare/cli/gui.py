"""``endoshare gui``: start the desktop app (needs the ``gui`` extra: PySide6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_USAGE


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("gui", help="start the desktop app (build cases, run the queue, review)")
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help="keep the app's settings in this INI file instead of the user's standard location")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..gui.app import main
    except ImportError as exc:
        print(f"endoshare gui: the desktop app needs PySide6 ({exc}); install it with "
              "pip install 'endoshare[gui]'.", file=sys.stderr)
        return EXIT_USAGE
    return main(settings_path=args.settings)


def console_main() -> int:
    """Entry point of ``endoshare-gui``."""
    parser = argparse.ArgumentParser(prog="endoshare-gui", description="Endoshare desktop app")
    parser.add_argument("--settings", type=Path, metavar="FILE")
    return run(parser.parse_args())
