"""The audit report written beside each shared output: what was done and checked, with no identifier.

Inputs are described only by their technical parameters (codec, size, rate, frame count): no file
name, no folder, no tag value, no case ID.  The report is written atomically.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import av

from . import __version__
from .media.join import JoinPlan


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


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
