"""Benchmark: detection speed on a 1080p25 H.264 video against the keyframe-decode floor and the old detector.

Usage::

    python benchmarks/bench_detect.py [--seconds 180] [--cache DIR] [--detector builtin] [--repeat 3]

The test video is generated once from the development frames (``../shared/data`` next to the repo)
and cached outside the repository (default: ``$TMPDIR/endoshare-bench``).  It is 1920x1080, 25 fps,
one keyframe every 2 s exactly (x264 ``veryfast`` CRF 23, B-frames, scene-cut keyframes off, as
hardware recorders write), a slow pan and sensor-like noise so that inter frames carry real data,
the in-body view drifting to another one every 20 s (1 s cross-fade), and out-of-body content: a
10 s stretch, a 4 s stretch and a 10-frame (0.4 s) excursion lying strictly between two keyframes.

Measured in the same run, alternating, best of ``--repeat``:

(a) the floor: demux every packet and decode the keyframes alone (no conversion, no model) — no
    detector that looks at pictures can do less;
(b) ``detect_video`` with the chosen detector (coarse-to-fine);
(p) unless ``--no-previous``, the same detector through the previous sampling code (the packet index,
    GOP plan and refinement of ``detect/sampling.py`` and ``detect/cues.py`` at ``PREVIOUS_COMMIT``,
    loaded from git history and swapped into the same ``detect_video``);
(c) unless ``--no-legacy``, the hand-made-features detector this project shipped before the learned one,
    loaded from git history (commit ``LEGACY_COMMIT``), through the same ``detect_video``;
(d) unless ``--no-compare``, the chosen detector on every frame, to count frames it flags that
    coarse-to-fine leaves unredacted.

Recall on the known out-of-body frames and in-body frames redacted are printed for (b) and (c): speed
means nothing if an out-of-body frame is missed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
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
    return [(start, start + length) for (start, _), length in zip(spans, lengths, strict=True)]


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


LEGACY_COMMIT = "af6d041"
LEGACY_FILES = ("src/endoshare/detect/builtin.py", "src/endoshare/detect/builtin_model.npz")
#: The sampling code before refined ranges decoded reference pictures first (every frame of a refined range
#: decoded, one in two scored).
PREVIOUS_COMMIT = "46add4f"
PREVIOUS_FILES = ("src/endoshare/detect/sampling.py", "src/endoshare/detect/cues.py")


def decode_keyframes(path: Path) -> int:
    """The floor: every packet demuxed, only the keyframes decoded, nothing converted or scored."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.skip_frame = "NONKEY"
        for packet in container.demux(stream):
            for _ in stream.codec_context.decode(packet):
                count += 1
    return count


def legacy_detector(workdir: Path):  # type: ignore[no-untyped-def]
    """The previous built-in detector (colour/shape features + logistic regression), from git history."""
    import importlib.util
    import subprocess

    target = workdir / "legacy_builtin"
    target.mkdir(parents=True, exist_ok=True)
    for name in LEGACY_FILES:
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{LEGACY_COMMIT}:{name}"], check=True,
                              capture_output=True).stdout
        (target / Path(name).name).write_bytes(blob)
    source = (target / "builtin.py").read_text(encoding="utf-8")
    # The old module imports its package's error type and base types relatively: point them at the package.
    source = source.replace("from ..errors import", "from endoshare.errors import").replace(
        "from .base import", "from endoshare.detect.base import")
    (target / "legacy_builtin.py").write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("legacy_builtin", target / "legacy_builtin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["legacy_builtin"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.BuiltinDetector(target / "builtin_model.npz")


def previous_sampling(workdir: Path):  # type: ignore[no-untyped-def]
    """The sampling functions of ``PREVIOUS_COMMIT`` (a package of their own, from git history)."""
    import importlib
    import subprocess

    target = workdir / f"previous_sampling_{PREVIOUS_COMMIT}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text("", encoding="utf-8")
    for name in PREVIOUS_FILES:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{PREVIOUS_COMMIT}:{name}"], check=True,
                                capture_output=True, text=True).stdout
        # Package-relative imports of the rest of endoshare point at the installed package.
        source = source.replace("from ..", "from endoshare.").replace("from .base import",
                                                                       "from endoshare.detect.base import")
        (target / Path(name).name).write_text(source, encoding="utf-8")
    sys.path.insert(0, str(workdir))
    try:
        sampling = importlib.import_module(f"{target.name}.sampling")
        cues = importlib.import_module(f"{target.name}.cues")
    finally:
        sys.path.remove(str(workdir))
    def coarse_scan(path, detector, settings, progress=None, cancel=None, frames="keyframes",  # type: ignore[no-untyped-def]
                    keyframes=None):
        # The previous code had no keyframe sink (the overlay finder's feed); the benchmark passes none.
        assert keyframes is None
        return sampling.coarse_scan(path, detector, settings, progress, cancel, frames)

    return {"coarse_scan": coarse_scan, "score_ranges": sampling.score_ranges,
            "suspicious_gops": cues.suspicious_gops, "scene_change_frames": cues.scene_change_frames}


def with_functions(module, functions, work):  # type: ignore[no-untyped-def]
    """Run ``work()`` with ``module``'s attributes replaced by ``functions``, then put them back."""
    saved = {name: getattr(module, name) for name in functions}
    for name, function in functions.items():
        setattr(module, name, function)
    try:
        return work()
    finally:
        for name, function in saved.items():
            setattr(module, name, function)


def timed(work):  # type: ignore[no-untyped-def]
    """Run ``work()``; return its result, wall-clock seconds and CPU seconds (all threads of this process).

    CPU seconds are printed too because the machine may be shared: they do not grow when other
    processes take the cores, wall-clock seconds do.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def accuracy(result, frame_count: int) -> str:  # type: ignore[no-untyped-def]
    truth = oob_spans(frame_count)
    oob_total = sum(b - a for a, b in truth)
    covered = sum(1 for a, b in truth for i in range(a, b) if result.segments.contains(i))
    redacted_inbody = result.segments.frame_count - covered
    return (f"out-of-body frames redacted {covered}/{oob_total}; in-body frames redacted {redacted_inbody} of "
            f"{frame_count - oob_total} ({100 * redacted_inbody / (frame_count - oob_total):.1f} %)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=180, help="length of the generated video (default 180)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "endoshare-bench")
    parser.add_argument("--detector", default="builtin")
    parser.add_argument("--repeat", type=int, default=3,
                        help="run each contender this many times, alternating, and keep the best")
    parser.add_argument("--no-previous", dest="previous", action="store_false",
                        help="skip (p), the same detector through the previous sampling code from git history")
    parser.add_argument("--no-legacy", dest="legacy", action="store_false",
                        help="skip (c), the previous built-in detector from git history")
    parser.add_argument("--no-compare", dest="compare_sequential", action="store_false",
                        help="skip (d), the every-frame detection used to check that nothing is missed")
    args = parser.parse_args()

    from endoshare.detect import run as detect_run
    from endoshare.detect.registry import create_detector
    from endoshare.detect.run import DetectOptions, detect_video

    args.cache.mkdir(parents=True, exist_ok=True)
    video = args.cache / f"bench-1080p25-fixedgop{GOP}-{args.seconds}s.mp4"
    if not video.exists():
        print(f"generating {video} (once)...", file=sys.stderr)
        generate(video, args.seconds)
    duration = float(args.seconds)
    size_mb = video.stat().st_size / 1e6
    print(f"video: {video} — {WIDTH}x{HEIGHT} {RATE} fps, {args.seconds} s, {size_mb:.1f} MB "
          f"({size_mb * 8 / args.seconds:.1f} Mbit/s), GOP {GOP}; cores: {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}; best of {args.repeat} run(s), contenders alternating")

    contenders = {"floor": None, "new": create_detector(args.detector)}
    if args.previous:
        contenders["previous"] = contenders["new"]
        previous = previous_sampling(args.cache)
    if args.legacy:
        contenders["legacy"] = legacy_detector(args.cache)
    best: dict[str, tuple[float, float]] = {}
    results: dict[str, object] = {}
    for _ in range(args.repeat):
        for name, detector in contenders.items():
            if detector is None:
                result, wall, cpu = timed(lambda: decode_keyframes(video))
            elif name == "previous":
                result, wall, cpu = timed(lambda d=detector: with_functions(
                    detect_run, previous, lambda: detect_video(video, d, DetectOptions())))
            else:
                result, wall, cpu = timed(lambda d=detector: detect_video(video, d, DetectOptions()))
            old = best.get(name, (float("inf"), float("inf")))
            if wall < old[0]:
                results[name] = result   # the per-phase times printed are those of the fastest run
            best[name] = (min(old[0], wall), min(old[1], cpu))
    keyframes = results.pop("floor")
    floor_s, floor_cpu = best["floor"]
    print(f"(a) floor, keyframes only: {keyframes} keyframes in {floor_s:.2f} s = {duration / floor_s:.1f}x realtime "
          f"({floor_cpu:.2f} CPU-s)")
    labels = {"new": f"(b) {args.detector}", "previous": f"(p) {args.detector}, sampling of {PREVIOUS_COMMIT}",
              "legacy": "(c) previous built-in (hand-made features)"}
    for name in ("new", "previous", "legacy"):
        if name not in results:
            continue
        result, (wall, cpu) = results[name], best[name]
        stats = result.stats  # type: ignore[attr-defined]
        print(f"{labels[name]}: {wall:.2f} s = {duration / wall:.1f}x realtime ({cpu:.2f} CPU-s; index+keyframes "
              f"{stats.seconds_index:.2f} s, refine {stats.seconds_refine:.2f} s); decoded {stats.frames_decoded}/"
              f"{result.frame_count} frames, {stats.gops_refined}/{stats.gops_total} GOPs refined, "  # type: ignore[attr-defined]
              f"{stats.scene_changes} size spikes, {stats.frames_scored} frames scored; {wall / floor_s:.2f}x the "
              f"floor ({cpu / floor_cpu:.2f}x in CPU-s)")
        print(f"    {accuracy(result, result.frame_count)}")  # type: ignore[attr-defined]
    if "previous" in best:
        print(f"ratio (p)/(b): {best['previous'][0] / best['new'][0]:.2f}x (wall), "
              f"{best['previous'][1] / best['new'][1]:.2f}x (CPU)")
    if "legacy" in best:
        print(f"ratio (c)/(b): {best['legacy'][0] / best['new'][0]:.2f}x (wall), "
              f"{best['legacy'][1] / best['new'][1]:.2f}x (CPU)")

    if args.compare_sequential:
        detector = contenders["new"]
        result = results["new"]
        every = detect_video(video, detector, DetectOptions(strategy="sequential"))
        flagged = every.sample_frames[every.sample_scores >= detector.threshold]
        missed = sum(1 for i in flagged.tolist() if not result.segments.contains(i))  # type: ignore[attr-defined]
        print(f"(d) every frame through the detector: {every.stats.seconds_total:.2f} s = "
              f"{duration / every.stats.seconds_total:.1f}x realtime; of the {flagged.size} frames it "
              f"scores out of body, coarse-to-fine leaves {missed} unredacted; redacted frames: "
              f"{every.segments.frame_count} (every frame) vs {result.segments.frame_count} (coarse-to-fine)")  # type: ignore[attr-defined]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
