"""Benchmark: the cost of the bitstream allow-list on a 1080p stream copy.

Usage::

    python benchmarks/bench_scrub.py [--seconds 60] [--cache DIR] [--repeat 3]

Generates (once, cached) a 1080p25 H.264 clip like the render benchmark's (x264 veryfast, CRF 22,
B-frames, GOP 50, temporal noise so that inter frames carry data), then copies it into an MP4 three
ways, in this process, and prints the best CPU and wall-clock seconds of ``--repeat`` runs:

* **plain** — demux and mux, no filtering (the floor);
* **python** — every packet through :class:`endoshare.media.scrub.BitstreamScrubber` (what the copy
  renderer does);
* **filter_units** — every packet through FFmpeg's ``filter_units=pass_types=…`` with the same type list
  (an allow-list by type only: it cannot check HEVC layer ids or the forbidden bit, nor canonicalise
  end-of-sequence units).

This is not a test; pytest does not collect it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import av
import av.bitstream
import imageio_ffmpeg

from endoshare.media.nal import ALLOWED_NAL_TYPES
from endoshare.media.scrub import BitstreamScrubber, open_output


def make_clip(path: Path, seconds: int) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
                    "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-crf", "22",
                    "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
                    str(partial)], check=True)
    partial.rename(path)
    return path


def copy(source: Path, target: Path, how: str) -> int:
    with av.open(str(source)) as src:
        in_stream = src.streams.video[0]
        out = open_output(target)
        try:
            out_stream = out.add_stream_from_template(in_stream)
            scrubber = bsf = None
            if how == "python":
                scrubber = BitstreamScrubber("h264", in_stream.codec_context.extradata)
                out_stream.codec_context.extradata = scrubber.extradata
            elif how == "filter_units":
                types = "|".join(str(t) for t in sorted(ALLOWED_NAL_TYPES["h264"]))
                bsf = av.bitstream.BitStreamFilterContext(f"filter_units=pass_types={types}", in_stream, out_stream)
            count = 0
            for packet in src.demux(in_stream):
                if packet.size == 0 and packet.dts is None:
                    continue
                packets = ([scrubber.scrub(packet)] if scrubber is not None else
                           bsf.filter(packet) if bsf is not None else [packet])
                for item in packets:
                    item.stream = out_stream
                    out.mux(item)
                    count += 1
            if bsf is not None:
                for item in bsf.filter(None):
                    item.stream = out_stream
                    out.mux(item)
        finally:
            out.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "endoshare-bench")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    clip = make_clip(args.cache / f"scrub-1080p-{args.seconds}s.mp4", args.seconds)
    megabytes = clip.stat().st_size / 1e6
    print(f"{clip}: {megabytes:.1f} MB, {megabytes * 8 / args.seconds:.1f} Mbit/s")
    with tempfile.TemporaryDirectory() as work:
        for how in ("plain", "python", "filter_units"):
            best_cpu = best_wall = float("inf")
            for _ in range(args.repeat):
                cpu, wall = time.process_time(), time.perf_counter()
                frames = copy(clip, Path(work) / f"{how}.mp4", how)
                best_cpu = min(best_cpu, time.process_time() - cpu)
                best_wall = min(best_wall, time.perf_counter() - wall)
            print(f"{how:>13}: {frames} packets, best CPU {best_cpu:.2f} s, best wall {best_wall:.2f} s")


if __name__ == "__main__":
    main()
