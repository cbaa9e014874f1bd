"""Benchmark: detection speed on a 1080p25 H.264 video against decoding every frame.

Usage::

    python benchmarks/bench_detect.py [--seconds 180] [--cache DIR] [--detector builtin]

The test video is generated once from the development frames (``../shared/data`` next to the repo)
and cached outside the repository (default: ``$TMPDIR/endoshare-bench``).  It is 1920x1080, 25 fps,
one keyframe every 2 s exactly (x264 ``veryfast`` CRF 23, B-frames, scene-cut keyframes off, as
hardware recorders write), a slow pan and sensor-like noise so that inter frames carry real data,
the in-body view drifting to another one every 20 s (1 s cross-fade), and out-of-body content: a
10 s stretch, a 4 s stretch and a 10-frame (0.4 s) excursion lying strictly between two keyframes.

Measured in the same run: (a) decoding every frame with FFmpeg's threaded decoder and no
conversion (the floor of any every-frame method); (b) ``detect_video`` with the chosen detector
(coarse-to-fine); (c) unless ``--no-compare``, the same detector on every frame, to count frames it
flags that coarse-to-fine leaves unredacted.  Recall on the known out-of-body frames is printed too:
speed means nothing if an out-of-body frame is missed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WIDTH, HEIGHT, RATE, GOP = 1920, 1080, 25, 50
PAN = 48
VIEW_SECONDS = 20


def oob_spans(frame_count: int) -> list[tuple[int, int]]:
    """Out-of-body spans (end exclusive) placed relative to the video length, off the keyframe grid."""
    spans = [(int(frame_count * 0.30) // GOP * GOP + 17, 0), (int(frame_count * 0.55) // GOP * GOP + 21, 0),
             (int(frame_count * 0.80) // GOP * GOP + 33, 0)]
    lengths = [10 * RATE, 10, 4 * RATE]
    return [(start, start + length) for (start, _), length in zip(spans, lengths)]


def _files(label: str) -> list[str]:
    with open(DATA / "frames.tsv", newline="", encoding="utf-8") as handle:
        return [row["file"] for row in csv.DictReader(handle, delimiter="\t") if row["label"] == label]


def _load(name: str) -> np.ndarray:
    with av.open(str(DATA / name)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(width=WIDTH + PAN, height=HEIGHT + PAN, format="rgb24")


def generate(path: Path, seconds: int) -> None:
    if not (DATA / "frames.tsv").is_file():
        sys.exit(f"development frames not found in {DATA}")
    frame_count = seconds * RATE
    inbody = [_load(f) for f in _files("inbody")[1:40:4]]
    oob = [_load(f) for f in _files("oob")[:3]]
    spans = oob_spans(frame_count)
    rng = np.random.default_rng(7)
    noise = [rng.integers(-6, 7, size=(HEIGHT, WIDTH, 1), dtype=np.int16) for _ in range(6)]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        # A fixed GOP (no scene-cut keyframes), as hardware recorders write: the 10-frame excursion must
        # then be found from compressed-domain cues, not from a keyframe the encoder put on it.
        stream = out.add_stream("libx264", rate=RATE, options={"preset": "veryfast", "crf": "23",
                                                               "x264-params": "scenecut=0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        for i in range(frame_count):
            inside = next((k for k, (a, b) in enumerate(spans) if a <= i < b), None)
            x = abs(i % (2 * PAN) - PAN)
            y = abs((i // 3) % PAN - PAN // 2)
            if inside is not None:
                crop = oob[inside % len(oob)][y:y + HEIGHT, x:x + WIDTH].astype(np.int16)
            else:
                view, into_view = divmod(i, VIEW_SECONDS * RATE)
                crop = inbody[view % len(inbody)][y:y + HEIGHT, x:x + WIDTH].astype(np.int16)
                if view and into_view < RATE:  # the camera drifts to the next view over 1 s
                    previous = inbody[(view - 1) % len(inbody)][y:y + HEIGHT, x:x + WIDTH].astype(np.int16)
                    crop = (crop * into_view + previous * (RATE - into_view)) // RATE
            crop += noise[i % len(noise)]
            frame = av.VideoFrame.from_ndarray(np.clip(crop, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            if i % 250 == 0:
                print(f"  encoding {i}/{frame_count}", file=sys.stderr, flush=True)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(partial, path)


def decode_every_frame(path: Path) -> int:
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for _ in container.decode(stream):
            count += 1
    return count


def timed(work):  # type: ignore[no-untyped-def]
    """Run ``work()``; return its result, wall-clock seconds and CPU seconds (all threads of this process).

    CPU seconds are printed too because the machine may be shared: they do not grow when other
    processes take the cores, wall-clock seconds do.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=180, help="length of the generated video (default 180)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "endoshare-bench")
    parser.add_argument("--detector", default="builtin")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run (a) and (b) this many times and keep the best (the machine may be shared)")
    parser.add_argument("--no-compare", dest="compare_sequential", action="store_false",
                        help="skip (c), the every-frame detection used to check that nothing is missed")
    args = parser.parse_args()

    from endoshare.detect.registry import create_detector
    from endoshare.detect.run import DetectOptions, detect_video

    args.cache.mkdir(parents=True, exist_ok=True)
    video = args.cache / f"bench-1080p25-fixedgop{GOP}-{args.seconds}s.mp4"
    if not video.exists():
        print(f"generating {video} (once)...", file=sys.stderr)
        generate(video, args.seconds)
    duration = Fraction(args.seconds)
    size_mb = video.stat().st_size / 1e6
    print(f"video: {video} — {WIDTH}x{HEIGHT} {RATE} fps, {args.seconds} s, {size_mb:.1f} MB "
          f"({size_mb * 8 / args.seconds:.1f} Mbit/s), GOP {GOP}; cores: {os.cpu_count()}")

    print(f"load average before: {os.getloadavg()[0]:.2f}; best of {args.repeat} run(s), (a) and (b) alternating")
    detector = create_detector(args.detector)
    baseline = baseline_cpu = detect_s = detect_cpu = float("inf")
    for _ in range(args.repeat):
        frames, wall, cpu = timed(lambda: decode_every_frame(video))
        baseline, baseline_cpu = min(baseline, wall), min(baseline_cpu, cpu)
        result, wall, cpu = timed(lambda: detect_video(video, detector, DetectOptions()))
        detect_s, detect_cpu = min(detect_s, wall), min(detect_cpu, cpu)
    print(f"(a) decode every frame: {frames} frames in {baseline:.2f} s = {float(duration) / baseline:.1f}x "
          f"realtime ({baseline_cpu:.2f} CPU-s)")
    stats = result.stats
    print(f"(b) detect_video [{detector.name}, {stats.strategy}]: {detect_s:.2f} s = "
          f"{float(duration) / detect_s:.1f}x realtime ({detect_cpu:.2f} CPU-s; index+keyframes "
          f"{stats.seconds_index:.2f} s, refine {stats.seconds_refine:.2f} s); decoded "
          f"{stats.frames_decoded}/{result.frame_count} frames, {stats.gops_refined}/{stats.gops_total} GOPs "
          f"refined, {stats.scene_changes} size spikes")
    print(f"ratio (a)/(b): {baseline / detect_s:.1f}x faster than decoding every frame "
          f"({baseline_cpu / detect_cpu:.1f}x in CPU time)")

    if args.compare_sequential:
        every = detect_video(video, detector, DetectOptions(strategy="sequential"))
        flagged = every.sample_frames[every.sample_scores >= detector.threshold]
        missed = sum(1 for i in flagged.tolist() if not result.segments.contains(i))
        print(f"(c) every frame through the detector: {every.stats.seconds_total:.2f} s = "
              f"{float(duration) / every.stats.seconds_total:.1f}x realtime; of the {flagged.size} frames it "
              f"scores out of body, coarse-to-fine leaves {missed} unredacted; redacted frames: "
              f"{every.segments.frame_count} (every frame) vs {result.segments.frame_count} (coarse-to-fine)")

    truth = oob_spans(result.frame_count)
    oob_total = sum(b - a for a, b in truth)
    covered = sum(1 for a, b in truth for i in range(a, b) if result.segments.contains(i))
    redacted_inbody = result.segments.frame_count - covered
    print(f"out-of-body frames redacted: {covered}/{oob_total}; in-body frames redacted: {redacted_inbody} "
          f"of {result.frame_count - oob_total}; spans: {result.segments.to_json()}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
