"""Benchmark: burned-in text (overlay) detection, its cost against out-of-body detection at 1080p,
and how well each generated overlay style is found.

Usage::

    python benchmarks/bench_overlays.py [--minutes 3] [--cache DIR] [--detector builtin]

1. A 1080p25 H.264 case is generated once (cached outside the repository, default
   ``~/.cache/endoshare-bench``): two clips of in-body pictures (the stills of ``make_case.py``, a slow
   pan, temporal noise, x264 ``veryfast`` CRF 22, one IDR every 2 s, scene-cut keyframes off) with a
   recorder overlay burned into every frame (name, date of birth, ID and device settings; the second
   clip in another layout and font).
2. On that case, after one untimed detection, timed one after the other (``--repeat`` times, the median
   share given): the out-of-body detector alone (``detect_case``, the baseline); detection feeding its
   keyframes to the overlay finder (``keyframes=finder.sink``, then
   ``finder.run()``, as ``endoshare process`` does): the overlay cost is the difference; and the finder
   reading the keyframes itself (``--detector none``, ``--segments``).  The shares printed are overlay
   time / detection time, by the clock and by CPU time (all threads; less sensitive to other processes).
   The overlay regions found are checked against the planted text.
3. Per style (fonts, sizes, colours, plates; 1080p, two layouts: the corners, and over the picture
   itself): on a one-second clip whose two keyframes show different in-body pictures, the planted lines
   whose every ink pixel the finder masks over the whole clip, and the masks that touch no planted line;
   with the loop filter skipped (as detection decodes) and applied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from make_case import DEFAULT_CACHE, GOP, HEIGHT, PAN, RATE, WIDTH, _crop, _stills  # noqa: E402

from overlay_media import STYLES, Style, draw, patient_lines, text_boxes  # noqa: E402

VERSION = 1


def _overlay_layer(style: Style, layout: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(yuv420p planes of the overlay drawn on black, a 4:2:0 mask of its pixels, ink boxes)."""
    import av

    lines = patient_lines(seed, layout)
    rgb = draw(np.zeros((HEIGHT, WIDTH, 3), np.uint8), lines, style)
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    ink = rgb.max(axis=2) > 40
    # Whole 2x2 blocks, so that luma and chroma are pasted alike.
    blocks = ink.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).any(axis=(1, 3))
    return yuv, blocks, text_boxes(lines, style, WIDTH, HEIGHT)


def _paste(frame: bytes, yuv: np.ndarray, blocks: np.ndarray) -> bytes:
    planes = np.frombuffer(frame, np.uint8).reshape(HEIGHT * 3 // 2, WIDTH).copy()
    full = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    planes[:HEIGHT][full] = yuv[:HEIGHT][full]
    for k in range(2):
        rows = slice(HEIGHT + k * HEIGHT // 4, HEIGHT + (k + 1) * HEIGHT // 4)
        chroma = planes[rows].reshape(HEIGHT // 2, WIDTH // 2)
        chroma[blocks] = yuv[rows].reshape(HEIGHT // 2, WIDTH // 2)[blocks]
    return planes.tobytes()


def make_overlay_case(minutes: float, cache: Path) -> tuple[Path, list[dict]]:
    root = cache / f"overlay-case-{minutes:g}min-v{VERSION}"
    folder, truth = root / "case", root / "truth.json"
    if truth.is_file():
        return folder, json.loads(truth.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    inbody, _ = _stills(11)
    total = round(minutes * 60 * RATE)
    counts = (total * 3 // 5, total - total * 3 // 5)
    planted = []
    first = 0
    for number, (count, style, layout) in enumerate(zip(counts, (STYLES[0], STYLES[3]), (0, 1), strict=True)):
        yuv, blocks, boxes = _overlay_layer(style, layout, seed=number)
        path = folder / f"clip{number + 1:02d}.mp4"
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                   "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(RATE), "-i", "-",
                   "-vf", "noise=c0s=10:c0f=t+u:c1s=4:c1f=t+u:c2s=4:c2f=t+u",
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", "22", "-pix_fmt", "yuv420p",
                   "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
                   "-x264-params", f"scenecut=0:keyint={GOP}:min-keyint={GOP}", "-f", "mp4", str(path)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE)
        assert process.stdin is not None
        for i in range(first, first + count):
            x = abs(i % (2 * PAN) - PAN) // 2 * 2
            y = abs((i // 4) % PAN - PAN // 2) // 2 * 2
            process.stdin.write(_paste(_crop(inbody[(i // (20 * RATE)) % len(inbody)], x, y), yuv, blocks))
        process.stdin.close()
        if process.wait() != 0:
            raise RuntimeError(f"ffmpeg failed on {path}")
        planted.append({"clip": path.name, "first_frame": first, "frames": count, "style": style.name,
                        "boxes": boxes})
        first += count
    truth.write_text(json.dumps(planted, indent=1) + "\n", encoding="utf-8")
    return folder, planted


def covered(ink: tuple[int, int, int, int], regions: list) -> bool:
    x0, y0, x1, y1 = ink
    return any(r.box.x0 <= x0 and r.box.y0 <= y0 and r.box.x1 >= x1 and r.box.y1 >= y1 for r in regions)


def per_style(detector, cache: Path,  # type: ignore[no-untyped-def]
              skip_loop_filter: bool = True) -> list[tuple[str, int, int, int, float]]:
    """(style, lines whose every ink pixel is masked over the whole clip, lines planted, masked regions
    touching no planted line, finder seconds per clip) at 1080p: for each style and two layouts (corners;
    over the picture itself) a one-second clip whose two keyframes show different in-body pictures."""
    from fractions import Fraction

    from endoshare.cases import discover_case
    from endoshare.media.join import plan_join
    from endoshare.overlay.find import OverlayOptions, find_overlays
    from endoshare.pipeline import probe_case
    from endoshare.sample import write_clip
    from overlay_media import inbody

    styles = [*STYLES, Style("DejaVuSans.ttf", 18, (255, 255, 255)), Style("DejaVuSansMono.ttf", 20, (0, 255, 255)),
              Style("DejaVuSans.ttf", 14, (255, 255, 255)), Style("DejaVuSans-Bold.ttf", 48, (255, 255, 255))]
    rows = []
    for number, style in enumerate(styles):
        found = planted = false = 0
        seconds = 0.0
        for layout in (0, 2):
            lines = patient_lines(number, layout)
            folder = cache / f"style-v{VERSION}" / f"{style.name}-{layout}"
            if not (folder / "clip.mp4").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                pictures = [draw(inbody(k * 250, WIDTH, HEIGHT, 40 + layout, Fraction(25)), lines, style)
                            for k in (0, 1)]
                write_clip(folder / "clip.mp4", (pictures[i >= 13] for i in range(26)), gop=25, options={"crf": "20"})
            plan = plan_join(probe_case(discover_case(folder)))
            started = time.perf_counter()
            overlays = find_overlays(plan, OverlayOptions(skip_loop_filter=skip_loop_filter), detector=detector)
            seconds += time.perf_counter() - started
            masked = np.zeros((HEIGHT, WIDTH), bool)
            whole = [r for r in overlays.masked if r.start_frame == 0 and r.end_frame == plan.total_frames]
            for r in whole:
                masked[r.box.y0:r.box.y1, r.box.x0:r.box.x1] = True
            inks = text_boxes(lines, style, WIDTH, HEIGHT).values()
            for x0, y0, x1, y1 in inks:
                planted += 1
                found += bool(masked[y0:y1, x0:x1].all())
            false += sum(not any(r.box.intersection(_box(ink)) for ink in inks) for r in overlays.masked)
        rows.append((style.name, found, planted, false, seconds / 2))
    return rows


def _box(ink: tuple[int, int, int, int]):  # type: ignore[no-untyped-def]
    from endoshare.overlay.text import Box
    return Box(*ink)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--detector", default="builtin", help="out-of-body detector to compare with")
    parser.add_argument("--no-styles", action="store_true", help="skip the per-style measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs of detection alone and fed (median share)")
    args = parser.parse_args()

    from endoshare.cases import discover_case
    from endoshare.detect.case import detect_case
    from endoshare.media.join import plan_join
    from endoshare.overlay.find import OverlayFinder, OverlayOptions
    from endoshare.overlay.text import TextDetector, detector_size
    from endoshare.pipeline import probe_case

    started = time.monotonic()
    folder, planted = make_overlay_case(args.minutes, args.cache)
    print(f"case {folder} ready in {time.monotonic() - started:.0f} s", flush=True)
    plan = plan_join(probe_case(discover_case(folder)))

    def timed(work):  # type: ignore[no-untyped-def]
        wall, cpu = time.monotonic(), time.process_time()
        result = work()
        return result, time.monotonic() - wall, time.process_time() - cpu

    # The text models are loaded once per process (onnxruntime sessions are shared): not per case.  One
    # untimed detection first: the first pass of a process pays one-off costs (its model, the file cache).
    TextDetector().read(np.zeros((48, 96, 3), np.uint8))
    detect_case(plan, args.detector)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    per_keyframe = KeyframeClock()
    fed: list[OverlayFinder] = []

    def detect_and_find():  # type: ignore[no-untyped-def]
        # As the pipeline does for each case: a new text detector (its models loaded), fed by detection.
        fed.append(OverlayFinder(plan, OverlayOptions(), TextDetector()))
        detect_case(plan, args.detector, keyframes=lambda clip: per_keyframe.watch(fed[-1].sink(clip)))
        return fed[-1].run()

    # Alone and fed, one after the other, ``--repeat`` times: the other processes on the machine come and go,
    # so each share compares two neighbouring runs, and the median share is given.
    alone_runs, both_runs = [], []
    for _ in range(args.repeat):
        alone_runs.append(timed(lambda: detect_case(plan, args.detector))[1:])
        overlays, *both = timed(detect_and_find)
        both_runs.append(tuple(both))
    own = OverlayFinder(plan, OverlayOptions(), TextDetector())
    own_overlays, own_seconds, own_cpu = timed(own.run)
    finder = fed[-1]
    detector = finder.detector
    load_after = " ".join(f"{v:.1f}" for v in os.getloadavg())
    minutes = plan.total_frames / RATE / 60
    oob_seconds, oob_cpu = (float(np.median([run[k] for run in alone_runs])) for k in (0, 1))
    shares = [((bw - aw) / aw, (bc - ac) / ac) for (aw, ac), (bw, bc) in zip(alone_runs, both_runs, strict=True)]
    print(f"{plan.total_frames} frames ({minutes:.1f} min) at {plan.target.width}x{plan.target.height}, "
          f"{len(overlays.samples)} keyframes")
    print(f"load average before / after the timed part: {load} / {load_after}")
    for n, ((aw, ac), (bw, bc), (sw, sc)) in enumerate(zip(alone_runs, both_runs, shares, strict=True)):
        print(f"run {n + 1}: out-of-body detection ({args.detector}) alone {aw:.2f} s ({ac:.2f} s of CPU, "
              "all threads); "
              f"detection feeding the overlay finder, then its regions {bw:.2f} s ({bc:.2f} s of CPU): "
              f"overlay / detection {100 * sw:.0f} % wall, {100 * sc:.0f} % CPU")
    det_w, det_h = detector_size(plan.target.width, plan.target.height)
    print(f"  overlay finding: text detector run {finder.reads} times on {finder.read_pixels / 1e6:.2f} Mpixels "
          f"(= {finder.read_pixels / (det_w * det_h):.1f} whole pictures at {det_w}x{det_h}); keyframes decoded "
          f"by the finder: {finder.keyframes_read}")
    print(f"  per keyframe fed (still map, measures, reads; wall clock): median {per_keyframe.median_ms:.1f} ms, "
          f"mean {per_keyframe.mean_ms:.1f} ms, {per_keyframe.count} keyframes")
    print(f"  overlay / out-of-body detection, median of {args.repeat} runs: "
          f"{100 * float(np.median([w for w, _ in shares])):.0f} % (wall clock, difference), "
          f"{100 * float(np.median([c for _, c in shares])):.0f} % (CPU time, difference)")
    print(f"finder reading its own keyframes (no detection): {own_seconds:.2f} s ({own_cpu:.2f} s of CPU) = "
          f"{100 * own_seconds / oob_seconds:.0f} % / {100 * own_cpu / oob_cpu:.0f} % of detection (median run); "
          f"{own.keyframes_read} keyframes decoded; same regions as when fed: {own_overlays == overlays}")
    for clip in planted:
        first, last = clip["first_frame"], clip["first_frame"] + clip["frames"]
        regions = [r for r in overlays.masked if r.start_frame <= first and r.end_frame >= last]
        hits = {kind: covered(tuple(box), regions) for kind, box in clip["boxes"].items()}
        if not all(hits.values()):      # several regions may share a line: count pixels
            union = np.zeros((HEIGHT, WIDTH), bool)
            for r in regions:
                union[r.box.y0:r.box.y1, r.box.x0:r.box.x1] = True
            hits = {kind: bool(union[y0:y1, x0:x1].all()) for kind, (x0, y0, x1, y1) in clip["boxes"].items()}
        print(f"  {clip['clip']} ({clip['style']}): planted lines masked over the whole clip: {hits}")
    print(f"  regions: {sum(r.kind == 'overlay' for r in overlays.regions)} overlay, "
          f"{sum(r.kind == 'transient' for r in overlays.regions)} transient (left visible)")
    if args.no_styles:
        return 0
    for skip in (True, False):
        print(f"\nper style at 1080p, loop filter {'skipped' if skip else 'applied'} (2 layouts x 4 lines, one-second "
              "clips): style | lines masked over the whole clip / planted | masked regions on no planted line | "
              "finder s per clip")
        for name, found, total, false, seconds in per_style(detector, args.cache, skip):
            print(f"  {name:34s} {found:2d}/{total:2d}  {false}  {seconds:.2f}")
    return 0


class KeyframeClock:
    """Wall-clock time of each keyframe handed to the finder (the work it adds to detection's pass)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def watch(self, sink):  # type: ignore[no-untyped-def]
        clock = self

        class Timed:
            def keyframe(self, pts, frame):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                sink.keyframe(pts, frame)
                clock.times.append(time.perf_counter() - started)

            def scanned(self, frame_of):  # type: ignore[no-untyped-def]
                sink.scanned(frame_of)
        return Timed()

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def median_ms(self) -> float:
        return 1000 * float(np.median(self.times)) if self.times else 0.0

    @property
    def mean_ms(self) -> float:
        return 1000 * float(np.mean(self.times)) if self.times else 0.0


if __name__ == "__main__":
    sys.exit(main())
