"""The audit report written beside each shared output: what was done and checked, with no identifier.

Inputs are described only by their technical parameters (codec, size, rate, frame count): no file
name, no folder, no tag value, no case ID.  JSON files are written through :mod:`endoshare.storage`
(exclusive random temporary name, then an atomic rename).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import av

from . import __version__
from .media.join import JoinPlan
from .storage import PRIVATE_FILE_MODE, write_atomically


def input_summary(plan: JoinPlan) -> list[dict[str, Any]]:
    summary = []
    for number, clip in enumerate(plan.clips, start=1):
        video = clip.info.video
        summary.append({
            "clip": number,
            "container": clip.info.container,
            "codec": video.codec,
            "profile": video.profile,
            "width": video.width,
            "height": video.height,
            "pix_fmt": video.pix_fmt,
            "frame_rate": f"{clip.source_rate.numerator}/{clip.source_rate.denominator}",
            "frames": clip.source_frames,
            "timeline_start_frame": clip.timeline_start,
            "timeline_frames": clip.timeline_frames,
            "streams_dropped": [s.kind for s in clip.info.streams if s.index != video.index],
            "tags_removed": len(clip.info.tags) + sum(len(s.tags) for s in clip.info.streams),
            "chapters_removed": len(clip.info.chapters),
            "sei_user_data_payloads_removed": len(clip.info.sei_user_data),
            "normalised_because": list(clip.differences),
        })
    return summary


def software_versions() -> dict[str, str]:
    return {"endoshare": __version__, "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "python": platform.python_version()}


def json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")


def write_json_atomically(path: Path, data: dict[str, Any], mode: int = PRIVATE_FILE_MODE) -> None:
    write_atomically(path, json_bytes(data), mode)
