"""``endoshare inspect FILE``: everything in a media file that could identify someone, and what the
scrubber would remove from it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EndoshareError
from ..media.findings import Finding, find_removable
from ..media.isobmff import MP4_EPOCH_OFFSET
from ..media.probe import MediaInfo, probe
from ..types import ExitCode


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show the streams, tags, chapters, SEI user data and MP4 times of media files, and "
                        "what the scrubber removes (MPEG-TS service names, MPEG-2 user data and captions, "
                        "subtitle text, XMP/uuid/free boxes, NAL units outside the allow-list)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    parser.set_defaults(func=run)


def _text(info: MediaInfo, removable: tuple[Finding, ...]) -> str:
    lines = [f"{info.path}", f"  container: {info.container}, {info.size_bytes} bytes, "
             f"{info.duration_seconds if info.duration_seconds is not None else '?'} s"]
    lines += [f"  tag {k} = {v!r}" for k, v in info.tags]
    for s in info.streams:
        desc = f"  stream {s.index}: {s.kind} {s.codec}"
        if s.kind == "video":
            desc += (f" {s.profile or ''} {s.width}x{s.height} {s.pix_fmt} {s.frame_rate} fps, "
                     f"{s.frame_count} frames")
            if s.hidden_packets:
                desc += f", {s.hidden_packets} HIDDEN by an edit list"
        lines.append(desc)
        lines += [f"    tag {k} = {v!r}" for k, v in s.tags]
    for c in info.chapters:
        span = (f"{c.start_seconds:.3f}-{c.end_seconds:.3f} s" if c.start_seconds is not None
                and c.end_seconds is not None else "(no time base)")
        lines.append(f"  chapter {span} {dict(c.tags)!r}")
    for sei in info.sei_user_data:
        lines.append(f"  SEI user data (type {sei.payload_type}) {sei.uuid} {sei.text!r}")
    for t in info.mp4_times:
        if t.creation or t.modification:
            lines.append(f"  {t.path}: created {t.creation - MP4_EPOCH_OFFSET} modified "
                         f"{t.modification - MP4_EPOCH_OFFSET} (Unix seconds)")
        else:
            lines.append(f"  {t.path}: times zero")
    if removable:
        lines.append("  removed by the scrubber:")
    for found in removable:
        preview = f" {found.preview!r}" if found.preview else ""
        lines.append(f"    {found.kind}: {found.where}, {found.count}x{preview}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    status = ExitCode.OK
    for path in args.files:
        try:
            info = probe(path)
            removable = find_removable(path)
        except EndoshareError as exc:
            status = ExitCode.SOME_FAILED
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc)}, ensure_ascii=False))
            else:
                print(f"endoshare inspect: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({**info.to_json(), "removable": [f.to_json() for f in removable]}, ensure_ascii=False))
        else:
            print(_text(info, removable))
    return status
