"""Finding a case's clips and putting them in recording order."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputPermissionError, MissingInputError, NoVideoFilesError, NoVideoStreamError, UnreadableMediaError
from .media.probe import MediaInfo

#: File name endings of recordings, compared case-insensitively (recorders write .MTS, .VOB, .MXF ...).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".webm",
                              ".m4v", ".vob", ".mxf", ".dv", ".wmv", ".3gp"})
#: Folder names that recorders and operating systems use for things that are not the case's clips.
SKIPPED_FOLDERS = frozenset({"__macosx", "system volume information", "$recycle.bin", "thumbnails", "thumbs"})
#: FFmpeg demuxers of single pictures: a still image renamed to .mp4 is not a recording.
STILL_IMAGE_FORMATS = ("image2", "_pipe")


@dataclass(frozen=True)
class Case:
    case_id: str
    folder: Path
    clips: tuple[Path, ...]


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that puts VID2 before VID10 (numbers compare as numbers, text case-insensitively)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.casefold(), p) for p in parts)


def clip_order(folder: Path, path: Path) -> tuple[object, ...]:
    """Natural order of a clip's path inside its case folder (sub-folders first by their own names, so
    ``DAY1/VID10`` comes after ``DAY1/VID2``); clips whose keys are equal are ordered by recording time."""
    try:
        parts = path.relative_to(folder).parts
    except ValueError:
        parts = (path.name,)
    return tuple(natural_key(part) for part in (*parts[:-1], Path(parts[-1]).stem))


def discover_case(folder: str | os.PathLike[str], case_id: str | None = None) -> Case:
    """The video files inside ``folder`` and its sub-folders, in natural path order.

    Clips whose paths sort equal (e.g. ``clip.MP4`` and ``clip.mp4``) are ordered by modification time;
    :func:`endoshare.pipeline.probe_case` refines that tie-break with the recording time once probed.
    Hidden files and folders (``.name``) and system folders are skipped; symbolic links to folders are
    not followed (no loops).  The case ID defaults to the folder name.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingInputError(f"Case folder {folder} does not exist; check the path.", path=folder)
    if not folder.is_dir():
        raise NoVideoFilesError(f"{folder} is a file, not a case folder; give the folder that holds the "
                                "case's clips.", path=folder)
    clips: list[Path] = []

    def on_error(error: OSError) -> None:
        raise InputPermissionError(f"Folder {error.filename or folder} of the case cannot be listed with your "
                                   "user's rights; ask for read access.", path=Path(error.filename or folder))

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d.casefold() not in SKIPPED_FOLDERS]
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                clips.append(path)
    if not clips:
        raise NoVideoFilesError(
            f"Case folder {folder} holds no video file (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}, "
            "also in its sub-folders); put the case's recordings inside it.", path=folder)

    def order(path: Path) -> tuple[object, ...]:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return (clip_order(folder, path), mtime, path.name)

    return Case(case_id_for(folder, case_id), folder, tuple(sorted(clips, key=order)))


def case_id_for(folder: Path, case_id: str | None = None) -> str:
    """``case_id``, or by default the folder's name, as text that can go into the mapping file and reports:
    a name that is not UTF-8 on disk (Python keeps those bytes as surrogates) has them written as ``\\xff``."""
    resolved_id = case_id if case_id is not None else folder.resolve().name
    resolved_id = os.fsencode(resolved_id).decode("utf-8", "backslashreplace")
    if not resolved_id.strip():
        raise NoVideoFilesError(f"Case folder {folder} gives an empty case ID; pass --case-id.", path=folder)
    return resolved_id


def check_recording(info: MediaInfo) -> None:
    """Raise the error that tells the user why a probed clip is not a usable recording: a still image
    under a video name, or a recording whose index lists no frame (truncated or damaged)."""
    video = info.video                     # raises NoVideoStreamError naming the file
    if info.container == STILL_IMAGE_FORMATS[0] or info.container.endswith(STILL_IMAGE_FORMATS[1]):
        raise NoVideoStreamError(f"{info.path} is a still image ({video.codec}), not a video recording, whatever its "
                            "name says; remove it from the case folder.", path=info.path)
    if not video.frame_count or not video.pix_fmt or not video.width:
        raise UnreadableMediaError(
            f"{info.path} holds no decodable video frame: the recording looks truncated or damaged (e.g. "
            "copied while the recorder was still writing it). Copy it again from the recorder, or remove it "
            "from the case folder.", path=info.path)
