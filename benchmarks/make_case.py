"""Generate the render benchmark's case: 1080p25 H.264, three clips, four out-of-body spans, a truth file.

Usage::

    python benchmarks/make_case.py [--minutes 10] [--cache DIR]

The case is written once into ``DIR/case-<minutes>min-v1/`` (default ``~/.cache/endoshare-bench``,
outside the repository) and reused while its ``truth.json`` exists:

* ``case/clip01.mp4``, ``clip02.mp4``, ``clip03.mp4``: 40 %, 35 % and 25 % of the length, 1920x1080,
  25 fps, yuv420p, x264 ``veryfast`` CRF 22 with B-frames, one IDR every 50 frames (2 s) exactly
  and **scene-cut keyframes off** (``scenecut=0``), as hardware recorders write them.  Each clip
  starts with an IDR; the clip lengths are not multiples of 50, so each clip ends on a short GOP.
* ``truth.json``: the out-of-body spans on the merged timeline (end exclusive), in the format that
  ``endoshare process --segments`` reads, plus the clip lengths.

Content: seven stills drawn once at 1080p (plus a pan margin) by :mod:`endoshare.synthetic` — four
in-body views and three operating-room views — cropped along a slow pan, the in-body view changing
every 20 s, with FFmpeg's temporal noise filter on top so that inter frames carry real data (a few
Mbit/s, like a recorder).  Out-of-body spans: one at the very start, a 10-frame one strictly between
two keyframes, a 12 s one, and one at the very end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

WIDTH, HEIGHT, RATE, GOP = 1920, 1080, 25, 50
PAN = 48                      # pan margin in pixels (even, so chroma planes crop exactly)
VIEW_FRAMES = 20 * RATE       # the in-body view changes every 20 s
CLIP_SHARES = (0.40, 0.35)    # the third clip takes the rest
VERSION = 1                   # bump when the content changes, so that old caches are not reused
DEFAULT_CACHE = Path.home() / ".cache" / "endoshare-bench"


@dataclass(frozen=True)
class CaseFiles:
    folder: Path               # the case folder (clips only), as given to `endoshare process`
    truth: Path
    clips: tuple[Path, ...]
    total_frames: int
    oob_spans: tuple[tuple[int, int], ...]


def clip_lengths(total: int) -> tuple[int, int, int]:
    first, second = (int(total * share) + 7 for share in CLIP_SHARES)
    return first, second, total - first - second


def oob_spans(total: int) -> tuple[tuple[int, int], ...]:
    """Four spans, end exclusive: start (6.3 s), 10 frames between keyframes, 12 s, end (5.4 s); shorter in a
    short case so that they never touch."""
    short = int(total * 0.37) // GOP * GOP + 21
    long = int(total * 0.62) // GOP * GOP + 33
    return ((0, min(6 * RATE + 7, total // 12)), (short, short + 10),
            (long, long + min(12 * RATE, total // 10)), (total - min(5 * RATE + 11, total // 12), total))


def _stills(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """In-body and out-of-body stills as yuv420p planes (Y, U, V) of the padded size."""
    import av

    from endoshare import synthetic

    def planes(rgb: np.ndarray) -> np.ndarray:
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()

    w, h = WIDTH + PAN, HEIGHT + PAN
    inbody = [planes(synthetic.inbody_frame(np.random.default_rng(seed + k), w, h, 0.0)) for k in range(4)]
    oob = [planes(synthetic.oob_frame(np.random.default_rng(seed + 100 + k), w, h, 0.0)) for k in range(3)]
    return inbody, oob


def _crop(planes: np.ndarray, x: int, y: int) -> bytes:
    """One yuv420p frame of WIDTH x HEIGHT cut from a padded still at an even offset."""
    h = HEIGHT + PAN
    luma = planes[:h]
    chroma = planes[h:].reshape(2, h // 2, (WIDTH + PAN) // 2)
    parts = [luma[y:y + HEIGHT, x:x + WIDTH],
             chroma[0, y // 2:(y + HEIGHT) // 2, x // 2:(x + WIDTH) // 2],
             chroma[1, y // 2:(y + HEIGHT) // 2, x // 2:(x + WIDTH) // 2]]
    return b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


def _encode_clip(path: Path, first: int, count: int, spans: tuple[tuple[int, int], ...],
                 inbody: list[np.ndarray], oob: list[np.ndarray]) -> None:
    partial = path.with_name(path.stem + ".partial.mp4")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(RATE), "-i", "-",
               "-vf", "noise=c0s=10:c0f=t+u:c1s=4:c1f=t+u:c2s=4:c2f=t+u",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "22", "-pix_fmt", "yuv420p",
               "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
               "-x264-params", f"scenecut=0:keyint={GOP}:min-keyint={GOP}",
               "-movflags", "+faststart", "-f", "mp4", str(partial)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    try:
        for i in range(first, first + count):
            inside = next((k for k, (a, b) in enumerate(spans) if a <= i < b), None)
            # A slow pan: a triangle wave across, a slower one down (even offsets for the chroma planes).
            x = abs(i % (2 * PAN) - PAN) // 2 * 2
            y = abs((i // 4) % PAN - PAN // 2) // 2 * 2
            still = oob[inside % len(oob)] if inside is not None else inbody[(i // VIEW_FRAMES) % len(inbody)]
            process.stdin.write(_crop(still, x, y))
        process.stdin.close()
    except BrokenPipeError:
        pass
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed while encoding {partial}")
    os.replace(partial, path)


def make_case(minutes: float, cache: Path, seed: int = 11, log=print) -> CaseFiles:  # type: ignore[no-untyped-def]
    """The case for ``minutes`` of video, generated on the first call and reused afterwards."""
    total = round(minutes * 60 * RATE)
    root = cache / f"case-{minutes:g}min-v{VERSION}"
    folder = root / "case"
    truth = root / "truth.json"
    lengths = clip_lengths(total)
    clips = tuple(folder / f"clip{n:02d}.mp4" for n in range(1, 4))
    spans = oob_spans(total)
    files = CaseFiles(folder, truth, clips, total, spans)
    if truth.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    inbody, oob = _stills(seed)
    first = 0
    for clip, count in zip(clips, lengths, strict=True):
        log(f"encoding {clip} ({count} frames)...")
        _encode_clip(clip, first, count, spans, inbody, oob)
        first += count
    truth.write_text(json.dumps({
        "frame_rate": f"{RATE}/1", "width": WIDTH, "height": HEIGHT, "gop": GOP, "scenecut": False,
        "total_frames": total,
        "clips": [{"file": c.name, "frames": n} for c, n in zip(clips, lengths, strict=True)],
        "segments": [{"start_frame": a, "end_frame": b} for a, b in spans],
    }, indent=1) + "\n", encoding="utf-8")
    log(f"generated {total} frames in {time.monotonic() - started:.0f} s")
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="total length of the three clips")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    args = parser.parse_args()
    files = make_case(args.minutes, args.cache, log=lambda m: print(m, file=sys.stderr))
    size = sum(c.stat().st_size for c in files.clips)
    seconds = files.total_frames / RATE
    print(f"{files.folder}: {files.total_frames} frames, {size / 1e6:.0f} MB, "
          f"{size * 8 / seconds / 1e6:.1f} Mbit/s; truth: {files.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
