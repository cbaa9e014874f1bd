"""Test media built at test time: frames that carry their own index, clips with planted identifiers; and
a case processed with given spans redacted."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt

from endoshare.pipeline import CaseRequest, CaseResult, ProcessOptions, process_case
from endoshare.sample import write_clip

BITS = 12          # frame indices up to 4095


def barcode_frame(index: int, width: int = 320, height: int = 180, tint: int = 0) -> npt.NDArray[np.uint8]:
    """An RGB frame whose top row of cells spells ``index`` in binary (white = 1) over a textured body.

    The texture gives blur something to remove; ``tint`` lets clips differ visibly.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    body = ((xx // 4 + yy // 4 + index) % 2 * 120 + 60).astype(np.uint8)
    frame = np.stack([body, np.full_like(body, 90 + tint), (255 - body)], axis=-1)
    cell_w, cell_h = _cell(width, height)
    frame[:cell_h] = 0
    for bit in range(BITS):
        if index >> bit & 1:
            frame[:cell_h, bit * cell_w:(bit + 1) * cell_w] = 255
    return frame


def _cell(width: int, height: int) -> tuple[int, int]:
    """Code cells scale with the picture, so a clip scaled to another size still reads back."""
    return width // (BITS + 4), height // 6


def read_barcode(frame: av.VideoFrame) -> int:
    rgb = frame.to_ndarray(format="rgb24")
    cell_w, cell_h = _cell(frame.width, frame.height)
    value = 0
    for bit in range(BITS):
        cell = rgb[3:cell_h - 3, bit * cell_w + 3:(bit + 1) * cell_w - 3]
        if cell.mean() > 128:
            value |= 1 << bit
    return value


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return [f.reformat(format="yuv420p") for f in container.decode(video=0)]


def luma_max(frame: av.VideoFrame) -> int:
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
    return int(rows.max())


def barcode_clip(path: Path, indices: Iterable[int], *, width: int = 320, height: int = 180,
                 rate: Fraction = Fraction(25), gop: int = 25, tint: int = 0, codec: str = "libx264",
                 planted: str | None = None, options: dict[str, str] | None = None,
                 container_format: str | None = None) -> Path:
    write_clip(path, (barcode_frame(i, width, height, tint) for i in indices), rate=rate, gop=gop,
               codec=codec, planted=planted, options={"crf": "18", **(options or {})},
               container_format=container_format)
    return path


def ffmpeg(*args: str | Path) -> None:
    """Run the ffmpeg binary shipped by imageio-ffmpeg (argument list, never a shell)."""
    command: Sequence[str] = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                              *map(str, args)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def process_spans(case: Path, tmp_path: Path, spans: Iterable[tuple[int, int]],
                  **options: Any) -> tuple[CaseResult, dict[str, Any]]:
    """Process ``case`` with these (start, end) timeline frame spans redacted, read from a segments file
    (no detector), into ``tmp_path``'s shared and archive folders: the result and its report."""
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": a, "end_frame": b} for a, b in spans]}))
    options = {"out_dir": tmp_path / "shared", "archive_dir": tmp_path / "archive", "detector": "none", **options}
    result = process_case(CaseRequest(case), ProcessOptions(segments_file=segments, **options))
    return result, json.loads(result.report.read_text())


def mapping_rows(archive: Path) -> list[dict[str, str]]:
    """The rows of an archive's mapping file as dicts (none when it does not exist yet)."""
    path = archive / "mapping.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
