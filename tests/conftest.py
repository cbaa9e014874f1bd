"""Shared test helpers: the options every pipeline test starts from, and where the development data is.

Tests import the plain helpers (``from conftest import options, DEV_DATA``); pytest loads this file
first, so the import finds the same module.

The development data (real endoscope stills, ``../shared/data`` beside the clone) is optional: every test
that can use it also runs on generated frames, and the real-data variants are *added* when the data is
present.  Set ``ENDOSHARE_DEV_DATA=off`` to run the suite as on a fresh clone without it, or to a folder
to use data kept elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from endoshare.pipeline import ProcessOptions

ROOT = Path(__file__).resolve().parents[1]
DEV_DATA_ENV = "ENDOSHARE_DEV_DATA"


def development_data() -> Path | None:
    """The development data folder (it holds ``frames.tsv``), or None when absent or hidden."""
    chosen = os.environ.get(DEV_DATA_ENV, "").strip()
    if chosen.lower() in ("off", "0", "no", "none"):
        return None
    folder = Path(chosen) if chosen else ROOT.parent / "shared" / "data"
    return folder if (folder / "frames.tsv").is_file() else None


#: The development data folder, or None: decided once per run.
DEV_DATA = development_data()


def picture_sources() -> list[str]:
    """Parameters for tests that run on generated pictures and, when present, on the development data too."""
    return ["synthetic", "development"] if DEV_DATA is not None else ["synthetic"]


def options(tmp_path: Path, **kwargs: Any) -> ProcessOptions:
    """Processing options writing under ``tmp_path``; no detection unless asked (it is tested on its own)."""
    return ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive",
                          **{"detector": "none", **kwargs})


def pytest_report_header(config: pytest.Config) -> str:
    return (f"development data: {DEV_DATA} (real-picture variants added)" if DEV_DATA is not None else
            f"development data: none ({DEV_DATA_ENV}=off or ../shared/data absent): generated pictures only")
