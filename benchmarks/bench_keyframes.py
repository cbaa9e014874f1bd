"""Benchmark: decoding only the keyframes of a clip, three ways, alternating in one run (best and median of
``--repeat``), with the ratios to the first:

(a) one decoder on one thread, fed the keyframe packets (the reference);
(b) one frame-threaded decoder fed the keyframe packets (FFmpeg picks the thread count): what detection's
    coarse pass and the overlay finder's own pass did before ``media/keyframes.py``;
(c) :class:`endoshare.media.keyframes.KeyframeReader`: a fresh decoder per keyframe, one worker per core.

All three skip the loop filter as the readers do.  Usage::

    python benchmarks/bench_keyframes.py [CLIP ...] [--repeat 6]

Without clips it reads the render benchmark's cached case (``make_case.py``; run ``bench_render.py`` once).
The machine may be shared: the 1-minute load average is printed beside each figure, and wall times under
load say little about what a second core would give (compare the CPU seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_case import DEFAULT_CACHE

from endoshare.media.keyframes import KeyframeReader


def one_decoder(path: Path, threads: int) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.skip_frame = "NONKEY"
        context.thread_type = "AUTO"
        context.thread_count = threads
        context.options = {"skip_loop_filter": "all"}
        count = 0
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.size:
                count += len(context.decode(packet))
        return count + len(context.decode(None))


def reader(path: Path) -> int:
    with KeyframeReader(path, skip_loop_filter=True) as keyframes:
        return sum(1 for _ in keyframes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    clips = args.clips or sorted(DEFAULT_CACHE.glob("case-3.5min-*/case/*.mp4"))
    if not clips:
        parser.error(f"no clips given and no cached case under {DEFAULT_CACHE}")
    ways: dict[str, Callable[[Path], int]] = {
        "(a) one decoder, one thread": lambda p: one_decoder(p, 1),
        "(b) one decoder, frame threads": lambda p: one_decoder(p, 0),
        "(c) KeyframeReader": reader,
    }
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    counts: dict[str, int] = {}
    print(f"clips: {', '.join(str(c) for c in clips)}; cores: {os.cpu_count()}; load {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeat):
        for name, way in ways.items():
            load = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            counts[name] = sum(way(clip) for clip in clips)
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu, load))
    if len(set(counts.values())) != 1:
        print(f"keyframes decoded differ: {counts}")
    reference = min(runs[next(iter(ways))])
    for name, measured in runs.items():
        best = min(measured)
        median = statistics.median(m[0] for m in measured)
        print(f"{name}: {counts[name]} keyframes, best {best[0]:.2f} s wall ({best[1]:.2f} CPU-s, load {best[2]:.2f}),"
              f" median {median:.2f} s; best {reference[0] / best[0]:.2f}x faster than (a), CPU "
              f"{best[1] / reference[1]:.2f}x (a)'s")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
