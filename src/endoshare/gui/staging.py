"""Turning the clip list a user built into a folder the pipeline reads in exactly that order.

The pipeline orders a case folder's clips by name.  When the user removed, added or reordered clips,
we stage the case: a private folder of links named ``001_<name>``, ``002_<name>``... in the chosen
order, so the core needs no GUI-only option.  It lives in the archive (never in the shared folder).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from ..cases import discover_case
from ..errors import EndoshareError, OutputError
from ..storage import private_dir

STAGING_FOLDER = "gui-cases"


def needs_staging(folder: Path | None, clips: Sequence[Path]) -> bool:
    """False when ``folder`` alone already gives the pipeline exactly ``clips`` in this order."""
    if folder is None:
        return True
    try:
        found = discover_case(folder).clips
    except EndoshareError:
        return True
    return tuple(p.resolve() for p in found) != tuple(p.resolve() for p in clips)


def _link(source: Path, target: Path) -> None:
    # Symlinks cost nothing; Windows without developer mode refuses them, so fall back to a hard
    # link (same volume) and, last, a copy.
    try:
        target.symlink_to(source.resolve())
        return
    except OSError:
        pass
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage_case(archive_dir: Path, clips: Sequence[Path]) -> Path:
    """A new folder under ``archive_dir`` holding ``clips`` in the given order; returns its path."""
    folder = archive_dir / STAGING_FOLDER / uuid.uuid4().hex
    try:
        private_dir(folder.parent)        # the archive's policy: only its owner may enter
        folder.mkdir(mode=0o700)
        width = max(3, len(str(len(clips))))
        for number, clip in enumerate(clips, start=1):
            _link(clip, folder / f"{number:0{width}d}_{clip.name}")
    except OSError as exc:
        raise OutputError(f"Cannot prepare the case in the archive folder {archive_dir} ({exc}); check that "
                          "the archive folder in Settings is writable.", path=archive_dir) from None
    return folder
