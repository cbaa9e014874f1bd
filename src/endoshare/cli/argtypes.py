"""Argument types shared by several sub-commands (argparse calls them on the raw text)."""

from __future__ import annotations

import argparse


def probability(text: str) -> float:
    """A number between 0 and 1, e.g. a detector threshold."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must lie between 0 and 1, got {text!r}")
    return value
