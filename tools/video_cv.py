"""Video-level cross-validation of the built-in detector and its smoothing (training-only tool).

    python tools/video_cv.py --cache build/views.npz --backbone build/lite0_128.onnx --out build/video-cv --simulate

A real excursion is a sequence, not a still: this builds test videos from the development stills as the
held-out evaluation does — in-body stills of one source (video or patient), each held for a while, with
out-of-body excursions of another source (or of the same patient) inserted, short (10 frames) and long —
encodes them with x264, and scores every frame with a head trained WITHOUT either source.  Then it
replays the smoothing (threshold, hysteresis, gap filling, minimum span, margin) over a grid and reports,
per fold and pooled, out-of-body recall and in-body kept at the frame level.  ``--confirm`` re-runs the
chosen operating point through the real coarse-to-fine ``detect_video`` (keyframes, packet-size cues,
refined groups of pictures) to show that sampling loses nothing against scoring every frame.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_data as data  # noqa: E402
import train_detector as train  # noqa: E402

from endoshare.detect.run import DetectOptions, detect_video, evaluate_segments  # noqa: E402
from endoshare.detect.sampling import ReadSettings, score_sequential  # noqa: E402
from endoshare.detect.smooth import SmoothingOptions, smooth_scores  # noqa: E402
from endoshare.timeline import seconds_to_frames  # noqa: E402

WIDTH, HEIGHT, RATE = 640, 360, 25


class FoldDetector:
    """The backbone with one fold's head: the Detector protocol, for videos of held-out sources."""

    name = "fold"
    stateful = False

    def __init__(self, session: ort.InferenceSession, size: int, head: train.Head, threshold: float) -> None:
        self.session, self.head, self.threshold = session, head, threshold
        self.input_size = (size, size)

    def reset(self) -> None:
        pass

    def score(self, frames: np.ndarray) -> np.ndarray:
        features = self.session.run(None, {"frames": np.ascontiguousarray(frames)})[0]
        return self.head.score(features).astype(np.float32)


@dataclass(frozen=True)
class Fold:
    inbody_source: str
    oob_source: str


def pictures(rows: list[data.Row], source: str, target: int) -> list[Image.Image]:
    return [data.load_picture(r).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
            for r in rows if r.source == source and r.target == target]


def make_video(path: Path, inbody: list[Image.Image], oob: list[Image.Image], rng: np.random.Generator,
               gop: int) -> list[str]:
    """In-body stills held 0.4-2 s each, with four excursions: 10 frames, ~1 s, ~3 s and ~8 s of
    out-of-body stills held 3-25 frames each.  Returns the per-frame truth."""
    plan: list[tuple[Image.Image, str, int]] = []
    excursions = [10, 25, 75, 200]
    rng.shuffle(excursions)
    for excursion in excursions:
        for _ in range(int(rng.integers(6, 14))):
            plan.append((inbody[int(rng.integers(len(inbody)))], "inbody", int(rng.integers(10, 50))))
        left = excursion
        while left > 0:
            hold = min(left, int(rng.integers(3, 26)))
            plan.append((oob[int(rng.integers(len(oob)))], "oob", hold))
            left -= hold
    for _ in range(int(rng.integers(6, 14))):
        plan.append((inbody[int(rng.integers(len(inbody)))], "inbody", int(rng.integers(10, 50))))
    labels: list[str] = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0"}
        for picture, label, hold in plan:
            pixels = np.asarray(picture)
            for k in range(hold):
                # Sensor noise and a slow drift: inter frames carry data, as in a real recording.
                shifted = np.roll(pixels, shift=k % 4, axis=1)
                noisy = np.clip(shifted.astype(np.int16) + rng.integers(-3, 4, size=shifted.shape), 0, 255)
                frame = av.VideoFrame.from_ndarray(noisy.astype(np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
                labels.append(label)
        container.mux(stream.encode(None))
    return labels


def folds_for(rows: list[data.Row]) -> list[Fold]:
    inbody_sources = sorted({r.source for r in rows if r.target == 0})
    oob_by_source = sorted({r.source for r in rows if r.target == 1})
    folds = []
    for i, src in enumerate(inbody_sources):
        # A patient with out-of-body frames of its own is a real case; others borrow another source's.
        own = [s for s in oob_by_source if s == src]
        folds.append(Fold(src, own[0] if own else oob_by_source[i % len(oob_by_source)]))
    return folds


def fold_scores(rows: list[data.Row], views: train.Views, features: np.ndarray, c: float
                ) -> dict[Fold, dict[int, float]]:
    """For each fold, the scores of its two sources' stills (as recorded) by a head trained without
    **either** source, as the held-out evaluation's videos are scored: table row -> score."""
    scores: dict[Fold, dict[int, float]] = {}
    for fold in folds_for(rows):
        train_mask = views.trainable & (views.source != fold.inbody_source) & (views.source != fold.oob_source)
        head = train.fit_head(features, views, train_mask, c)
        test = views.plain & (views.row >= 0) & np.isin(views.source, [fold.inbody_source, fold.oob_source])
        scores[fold] = {int(r): float(v) for r, v in zip(views.row[test], head.score(features[test]), strict=True)}
    return scores


def simulated_runs(rows: list[data.Row], scores: dict[Fold, dict[int, float]], videos_per_fold: int,
                   seed: int) -> list[dict[str, Any]]:
    """The same sequences as :func:`make_video`, scored without encoding: each frame takes the score of the
    still it shows by its fold's head (:func:`fold_scores`), so that a grid of smoothing settings over every
    fold costs seconds.  Without ``--simulate`` the videos are really encoded and decoded."""
    rng = np.random.default_rng(seed)
    runs: list[dict[str, Any]] = []
    for fold in folds_for(rows):
        score_of_row = scores[fold]
        inbody = [i for i, r in enumerate(rows)
                  if r.source == fold.inbody_source and r.target == 0 and i in score_of_row]
        oob = [i for i, r in enumerate(rows) if r.source == fold.oob_source and r.target == 1 and i in score_of_row]
        for _ in range(videos_per_fold):
            labels: list[str] = []
            values: list[float] = []
            shown: list[int] = []

            def show(pool: list[int], label: str, hold: int, labels: list[str] = labels,
                     values: list[float] = values, shown: list[int] = shown,
                     score_of_row: dict[int, float] = score_of_row) -> None:
                index = pool[int(rng.integers(len(pool)))]
                labels.extend([label] * hold)
                values.extend([score_of_row[index]] * hold)
                shown.extend([index] * hold)

            excursions = [10, 25, 75, 200]
            rng.shuffle(excursions)
            for excursion in [*excursions, 0]:
                for _ in range(int(rng.integers(6, 14))):
                    show(inbody, "inbody", int(rng.integers(10, 50)))
                left = excursion
                while left > 0:
                    hold = min(left, int(rng.integers(3, 26)))
                    show(oob, "oob", hold)
                    left -= hold
            runs.append({"fold": fold, "labels": labels, "frames": np.arange(len(labels)),
                         "scores": np.asarray(values), "rate": Fraction(RATE), "rows": np.asarray(shown)})
    return runs


def grid_search(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every setting of the grid over every run.  Exit thresholds are absolute (a wide hysteresis, enter 0.3
    exit 0.03, was the best and lies outside a grid of exit/enter ratios); ``margin_floor`` 0 is the
    unconditional margin, a third of the exit threshold the margin that stops at clearly in-body frames."""
    grid = []
    settings = []
    for enter, exit_, margin in itertools.product([0.05, 0.08, 0.12, 0.2, 0.3, 0.5],
                                                  [0.003, 0.005, 0.01, 0.02, 0.03, 0.05],
                                                  ["0", "1/25", "2/25", "3/25", "4/25", "1/5", "2/5"]):
        if exit_ <= enter:
            for floor in [0.0] if margin == "0" else [0.0, exit_ / 3]:
                settings.append(SmoothingOptions(enter_threshold=enter, exit_threshold=exit_,
                                                 margin_seconds=Fraction(margin), fill_gap_seconds=Fraction(1),
                                                 margin_floor=floor))
    for smoothing in settings:
        per_run = []
        for run in runs:
            labels = run["labels"]
            segments = smooth_scores(run["frames"], run["scores"], len(labels), run["rate"], smoothing, 0.5)
            ev = evaluate_segments(segments, labels, len(labels))
            per_run.append((ev.oob_redacted, ev.oob_frames, ev.inbody_kept, ev.inbody_frames))
        totals = np.asarray(per_run, dtype=np.float64).sum(axis=0)
        grid.append({"enter": smoothing.enter_threshold, "exit": smoothing.exit_threshold,
                     "margin": str(smoothing.margin_seconds), "margin_floor": round(smoothing.margin_floor, 4),
                     "fill_gap": str(smoothing.fill_gap_seconds),
                     "oob_recall": round(totals[0] / totals[1], 4), "inbody_kept": round(totals[2] / totals[3], 4),
                     "worst_video_recall": round(min(r[0] / r[1] for r in per_run), 3),
                     "worst_video_kept": round(min(r[2] / r[3] for r in per_run), 3)})
    # Privacy first: settings reaching 99.5 % out-of-body recall, then the most surgery kept.
    grid.sort(key=lambda g: (-int(g["oob_recall"] >= 0.995), -g["inbody_kept"]))
    return grid


def _redacted(segments: Any, frame_count: int) -> np.ndarray:
    mask = np.zeros(frame_count, dtype=bool)
    for seg in segments:
        mask[seg.start_frame:seg.end_frame] = True
    return mask


def _runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def breakdown(runs: list[dict[str, Any]], smoothing: SmoothingOptions, rows: list[data.Row]) -> dict[str, Any]:
    """Where one setting loses in-body frames and misses out-of-body ones (simulated runs).

    Lost in-body frames are split by cause: the **margin** (lost only because of the margin; around a true
    excursion or around a false span), **tails** (inside a span, before margins, that holds out-of-body
    frames: hysteresis and gap filling carried it over in-body stills), **false spans** (a span, before
    margins, with no out-of-body frame).  Missed out-of-body frames are split into those at the **edge** of
    an excursion (the missed run touches in-body frames) and those **inside** one, and counted per source.
    """
    core_options = replace(smoothing, margin_seconds=Fraction(0))
    lost = {"margin_true": 0, "margin_false": 0, "tails": 0, "false_spans": 0}
    missed = {"edge": 0, "inside": 0}
    missed_by_source: dict[str, int] = {}
    lost_by_still: dict[str, int] = {}
    lost_by_fold: dict[str, dict[str, int]] = {}
    n_inbody = n_oob = 0
    for run in runs:
        labels = np.asarray(run["labels"])
        count = labels.size
        oob, inbody = labels == "oob", labels == "inbody"
        n_inbody += int(inbody.sum())
        n_oob += int(oob.sum())
        enter = smoothing.enter_threshold if smoothing.enter_threshold is not None else 0.5
        full = _redacted(smooth_scores(run["frames"], run["scores"], count, run["rate"], smoothing, enter), count)
        core = _redacted(smooth_scores(run["frames"], run["scores"], count, run["rate"], core_options, enter),
                         count)
        true_core = np.zeros(count, dtype=bool)
        for start, end in _runs_of(core):
            if oob[start:end].any():
                true_core[start:end] = True
        margin = int(seconds_to_frames(smoothing.margin_seconds, run["rate"]))
        near_true = true_core.copy()
        for start, end in _runs_of(true_core):
            near_true[max(0, start - margin):end + margin] = True
        gone = inbody & full
        fold = lost_by_fold.setdefault(run["fold"].inbody_source, {"inbody": 0, "lost": 0, "oob": 0, "missed": 0})
        fold["inbody"] += int(inbody.sum())
        fold["lost"] += int(gone.sum())
        fold["oob"] += int(oob.sum())
        lost["margin_true"] += int((gone & ~core & near_true).sum())
        lost["margin_false"] += int((gone & ~core & ~near_true).sum())
        lost["tails"] += int((gone & true_core).sum())
        lost["false_spans"] += int((gone & core & ~true_core).sum())
        for index, count in zip(*np.unique(run["rows"][gone], return_counts=True), strict=True):
            key = f"{rows[int(index)].source} ({rows[int(index)].path.name})"
            lost_by_still[key] = lost_by_still.get(key, 0) + int(count)
        miss = oob & ~full
        fold["missed"] += int(miss.sum())
        for start, end in _runs_of(miss):
            edge = (start > 0 and inbody[start - 1]) or (end < count and inbody[end])
            missed["edge" if edge else "inside"] += end - start
            for index in run["rows"][start:end]:
                key = f"{rows[int(index)].source} ({rows[int(index)].path.name})"
                missed_by_source[key] = missed_by_source.get(key, 0) + 1
    return {"setting": smoothing.to_json(), "inbody_frames": n_inbody, "oob_frames": n_oob,
            "lost_points": {k: round(100 * v / n_inbody, 2) for k, v in lost.items()},
            "missed_points": {k: round(100 * v / n_oob, 3) for k, v in missed.items()},
            "missed_frames_by_still": dict(sorted(missed_by_source.items(), key=lambda kv: -kv[1])),
            "lost_frames_by_still": dict(sorted(lost_by_still.items(), key=lambda kv: -kv[1])[:15]),
            "per_fold": {k: {"kept": round(1 - v["lost"] / v["inbody"], 4),
                             "recall": round(1 - v["missed"] / max(v["oob"], 1), 4)}
                         for k, v in lost_by_fold.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=train.DEFAULT_TABLE)
    parser.add_argument("--cache", type=Path, required=True, help="views + features from train_detector.py")
    parser.add_argument("--backbone", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--zoom-share", type=float, default=train.ZOOM_SHARE)
    parser.add_argument("--c", type=float, default=0.1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--videos-per-fold", type=int, default=1)
    parser.add_argument("--simulate", action="store_true",
                        help="replay each fold's still scores instead of encoding videos: the grid in minutes")
    parser.add_argument("--confirm", type=str, default=None, help="JSON smoothing options to run for real")
    parser.add_argument("--only", nargs="+", default=None, metavar="SOURCE",
                        help="encoded videos: only the folds of these in-body sources (a few folds for a check)")
    parser.add_argument("--explain", type=str, nargs="+", default=None,
                        help="JSON smoothing options: where they lose in-body frames and miss out-of-body ones")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = data.read_rows(args.table)
    views, features, origin = train.load_cache(args.cache)
    if origin != train.features_origin(args.backbone, args.zoom_share):
        raise SystemExit(f"{args.cache} holds features of another backbone or zoom: run train_detector.py with "
                         f"--backbone {args.backbone} --zoom-share {args.zoom_share:g} first")
    if args.simulate:
        runs = simulated_runs(rows, fold_scores(rows, views, features, args.c), 6, train.SEED)
    else:
        runs = encoded_runs(rows, views, features, args)
    if args.explain and args.simulate:
        reports = [breakdown(runs, SmoothingOptions.from_json(json.loads(text)), rows) for text in args.explain]
        print(json.dumps(reports, indent=1))
        return
    grid = grid_search(runs)
    (args.out / "grid.json").write_text(json.dumps(grid, indent=1))
    for g in grid[:25]:
        print(g)
    if args.confirm and not args.simulate:
        smoothing = SmoothingOptions.from_json(json.loads(args.confirm))
        confirm = []
        for run in runs:
            result = detect_video(run["path"], run["detector"], DetectOptions(smoothing=smoothing))
            ev = evaluate_segments(result.segments, run["labels"], len(run["labels"]))
            confirm.append({"video": run["path"].name, "inbody_source": run["fold"].inbody_source,
                            "oob_source": run["fold"].oob_source, **ev.to_json(),
                            "frames_decoded": result.stats.frames_decoded})
            print(confirm[-1], flush=True)
        (args.out / "confirm.json").write_text(json.dumps(confirm, indent=1))


def encoded_runs(rows: list[data.Row], views: train.Views, features: np.ndarray,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """Encode one video per fold and score every frame with a head trained without either source."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    backbone = train.two_view_backbone(args.backbone, args.zoom_share)
    session = ort.InferenceSession(backbone.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(train.SEED)
    runs = []
    for fold in folds_for(rows):
        if args.only and fold.inbody_source not in args.only:
            continue
        train_mask = views.trainable & (views.source != fold.inbody_source) & (views.source != fold.oob_source)
        head = train.fit_head(features, views, train_mask, args.c)
        detector = FoldDetector(session, args.size, head, 0.5)
        inbody, oob = pictures(rows, fold.inbody_source, 0), pictures(rows, fold.oob_source, 1)
        for v in range(args.videos_per_fold):
            gop = int(rng.choice([25, 50, 125]))
            path = args.out / f"{fold.inbody_source.replace('/', '_')}__{fold.oob_source.replace('/', '_')}_{v}.mp4"
            labels = make_video(path, inbody, oob, rng, gop)
            scan = score_sequential(path, detector, ReadSettings())
            runs.append({"fold": fold, "path": path, "labels": labels, "frames": scan.frames, "scores": scan.scores,
                         "rate": scan.frame_rate, "detector": detector})
            print(f"{path.name}: {len(labels)} frames, {labels.count('oob')} out of body, gop {gop}", flush=True)
    return runs


if __name__ == "__main__":
    main()
