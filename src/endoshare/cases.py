"""Finding a case's clips and putting them in recording order."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputPermissionError, MissingInputError, NoVideoFilesError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".webm", ".m4v"})


@dataclass(frozen=True)
class Case:
    case_id: str
    folder: Path
    clips: tuple[Path, ...]


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that puts VID2 before VID10 (numbers compare as numbers, text case-insensitively)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.casefold(), p) for p in parts)


def discover_case(folder: str | os.PathLike[str], case_id: str | None = None) -> Case:
    """The video files directly inside ``folder``, in natural name order.

    Clips whose names sort equal (e.g. ``clip.MP4`` and ``clip.mp4``) are ordered by modification time.
    The case ID defaults to the folder name.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingInputError(f"Case folder {folder} does not exist; check the path.", path=folder)
    if not folder.is_dir():
        raise NoVideoFilesError(f"{folder} is a file, not a case folder; give the folder that holds the "
                                "case's clips.", path=folder)
    try:
        entries = list(folder.iterdir())
    except PermissionError:
        raise InputPermissionError(f"Case folder {folder} cannot be listed with your user's rights; ask "
                                   "for read access.", path=folder) from None
    clips = [p for p in entries if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
             and not p.name.startswith(".")]
    if not clips:
        raise NoVideoFilesError(
            f"Case folder {folder} holds no video file (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}); "
            "put the case's recordings directly inside it.", path=folder)

    def order(path: Path) -> tuple[object, ...]:
        stem_key = natural_key(path.stem)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return (stem_key, mtime, path.name)

    resolved_id = case_id if case_id is not None else folder.resolve().name
    if not resolved_id.strip():
        raise NoVideoFilesError(f"Case folder {folder} gives an empty case ID; pass --case-id.", path=folder)
    return Case(resolved_id, folder, tuple(sorted(clips, key=order)))
