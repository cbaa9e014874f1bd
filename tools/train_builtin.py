"""Train the built-in out-of-body detector and write ``src/endoshare/detect/builtin_model.npz``.

    python tools/train_builtin.py [--table ../shared/data/frames.tsv] [--output PATH] [--report PATH]

Reproducible: fixed seeds, a deterministic solver (Newton's method on an L2-regularised logistic
loss), so the same table gives the same model file.  What it does, and why:

1. Reads the labelled stills table (``file``, ``label``, ``source_repo``, ``source_path`` columns)
   and resizes every image to the detector's input size with PyAV, as the video path does.
2. Maps labels to training roles (see ``ROLES``): real out-of-body views are positives, in-body
   views (including weaker in-body examples with overlays) negatives; frames with no single right
   answer (black, no-signal, fog, trocar, already pixelated) are left out of training and only
   reported.  Synthetic frames from ``endoshare.synthetic`` are added so that the generated demo
   case is handled and so that the few real OoB frames are not the only positives.
3. Held-out estimate: leave-one-group-out over patients/sources (one egoodman92 patient, one
   Cholec80 video, one holohub application, the MVOR room camera...), never splitting a patient
   across train and test.  The decision threshold is chosen on these out-of-fold scores for high
   OoB recall, then the final model is fitted on every usable frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from endoshare.detect.builtin import INPUT_SIZE, BuiltinModel, default_model_path, extract_features
from endoshare.evaluation import LabelledStill, evaluate_scores, load_stills, read_stills_table, roc_auc
from endoshare.synthetic import inbody_frame, oob_frame

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO.parent / "shared" / "data" / "frames.tsv"
SEED = 20261124

#: label -> (target, weight of one frame).  Weights balance sources, not frames: the 120 MVOR room
#: images are near-duplicates from one camera, so together they count about as much as the seven
#: real endoscope OoB frames do.
ROLES: dict[str, tuple[int, float]] = {
    "oob": (1, 10.0),
    "oob_or_scene": (1, 0.5),
    "inbody": (0, 1.0),
    "inbody_sinus": (0, 1.0),
    "inbody_annotated": (0, 1.0),
    "overlay_inbody": (0, 1.0),
}
#: Licences whose frames may shape the shipped model (the package is MIT-licensed).  Frames under
#: non-commercial or unstated terms are still scored for the held-out figures, never trained on.
PERMISSIVE_LICENCES = ("MIT", "Apache-2.0")
SYNTHETIC_PER_CLASS = 600
SYNTHETIC_WEIGHT = 1.0
L2 = 10.0
#: Out-of-fold recall the threshold must reach on real OoB frames and on synthetic OoB frames.
TARGET_RECALL = 0.95


@dataclass(frozen=True)
class TrainingSet:
    features: npt.NDArray[np.float32]
    targets: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    groups: tuple[str, ...]


def group_of(still: LabelledStill) -> str:
    """Patient (egoodman92: the video number) or source folder: the unit a held-out split keeps whole."""
    if still.source_repo == "egoodman92/laparoscopic-dataset":
        return f"{still.source_repo}:patient-{Path(still.source_path).name.split('-')[0]}"
    return f"{still.source_repo}:{Path(still.source_path).parent}"


def resize_like_video_path(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    width, height = INPUT_SIZE
    video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
    return video_frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def synthetic_features(seed: int, count: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Features of ``count`` in-body then ``count`` OoB synthetic frames, in several frame shapes."""
    shapes = ((320, 180), (320, 180), (256, 192), (384, 216))
    frames, targets = [], []
    for target, generate in ((0, inbody_frame), (1, oob_frame)):
        for i in range(count):
            width, height = shapes[i % len(shapes)]
            rng = np.random.default_rng([seed, target, i])
            frames.append(resize_like_video_path(generate(rng, width, height, t=float(i % 50))))
            targets.append(target)
    return extract_features(np.stack(frames)), np.asarray(targets, dtype=np.float64)


def fit_logistic(features: npt.NDArray[np.float32], targets: npt.NDArray[np.float64],
                 weights: npt.NDArray[np.float64], threshold: float = 0.5) -> BuiltinModel:
    """Weighted L2 logistic regression on standardised features, by Newton's method."""
    w_sum = weights.sum()
    mean = (features * weights[:, None]).sum(axis=0) / w_sum
    scale = np.sqrt(((features - mean) ** 2 * weights[:, None]).sum(axis=0) / w_sum)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = np.c_[(features - mean) / scale, np.ones(len(features))]
    beta = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], L2)
    penalty[-1] = 0.0
    norm = weights / w_sum * len(weights)
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(z @ beta, -40, 40)))
        gradient = z.T @ (norm * (p - targets)) + penalty * beta
        hessian = (z * (norm * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return BuiltinModel(feature_mean=mean.astype(np.float32), feature_scale=scale.astype(np.float32),
                        weights=beta[:-1].astype(np.float32), bias=float(beta[-1]), threshold=threshold)


def choose_threshold(positive_scores: npt.NDArray[np.float64]) -> float:
    """The highest threshold that still flags TARGET_RECALL of these positives' scores."""
    positives = np.sort(positive_scores)
    allowed_misses = int(np.floor((1 - TARGET_RECALL) * len(positives)))
    # Rounded down so that storing it as float32 can never lift it above the frame it must catch.
    return float(np.clip(np.floor(positives[allowed_misses] * 1e4) / 1e4, 0.01, 0.99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="labelled stills TSV")
    parser.add_argument("--output", type=Path, default=default_model_path(), help="model file to write")
    parser.add_argument("--report", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--all-licences", action="store_true",
                        help="also train on frames whose licence is non-commercial or unstated "
                             "(for experiments; the shipped model does not)")
    args = parser.parse_args(argv)

    stills = read_stills_table(args.table)
    frames = load_stills(stills, INPUT_SIZE)
    real_features = extract_features(frames)
    labels = np.array([s.label for s in stills])
    groups = np.array([group_of(s) for s in stills])
    usable = np.array([s.label in ROLES and (args.all_licences or s.license.startswith(PERMISSIVE_LICENCES))
                       for s in stills])
    real_targets = np.array([ROLES.get(s.label, (0, 0.0))[0] for s in stills], dtype=np.float64)
    real_weights = np.array([ROLES.get(s.label, (0, 0.0))[1] for s in stills], dtype=np.float64)

    syn_features, syn_targets = synthetic_features(SEED, SYNTHETIC_PER_CLASS)
    syn_weights = np.full(len(syn_targets), SYNTHETIC_WEIGHT)
    # A second, independent synthetic set only checks the threshold on unseen synthetic frames.
    check_features, check_targets = synthetic_features(SEED + 1, 100)

    # Leave one group out: every real frame gets a score from a model that never saw its patient.
    out_of_fold = np.zeros(len(stills))
    for group in sorted(set(groups.tolist())):
        held = groups == group
        train = usable & ~held
        model = fit_logistic(np.r_[real_features[train], syn_features],
                             np.r_[real_targets[train], syn_targets],
                             np.r_[real_weights[train], syn_weights])
        out_of_fold[held] = model.predict(real_features[held])

    is_real_positive = np.isin(labels, [label for label, (target, _) in ROLES.items() if target == 1])
    positive_or_inbody = is_real_positive | (labels == "inbody")
    final = fit_logistic(np.r_[real_features[usable], syn_features], np.r_[real_targets[usable], syn_targets],
                         np.r_[real_weights[usable], syn_weights])
    threshold = min(choose_threshold(out_of_fold[labels == "oob"]),
                    choose_threshold(out_of_fold[labels == "oob_or_scene"]),
                    choose_threshold(final.predict(check_features)[check_targets == 1]))
    final = BuiltinModel(final.feature_mean, final.feature_scale, final.weights, final.bias, threshold)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    final.save(args.output)

    held_out = evaluate_scores(labels.tolist(), out_of_fold, threshold, "builtin (leave-one-group-out)")
    full = evaluate_scores(labels.tolist(), final.predict(real_features), threshold, "builtin (all data)")
    or_scene = labels == "oob_or_scene"
    check_scores = final.predict(check_features)
    started = time.perf_counter()
    batch = np.repeat(frames[:64], 8, axis=0)
    for _ in range(5):
        final.predict(extract_features(batch))
    frames_per_second = 5 * len(batch) / (time.perf_counter() - started)
    report = {
        "model_file": str(args.output), "model_bytes": args.output.stat().st_size,
        "trained_on": {"real_frames": int(usable.sum()), "synthetic_frames": len(syn_targets),
                       "licences": sorted({s.license for s, u in zip(stills, usable) if u})},
        "threshold": threshold, "table": str(args.table),
        "held_out": held_out.to_json(), "all_data": full.to_json(),
        "held_out_oob_or_scene_recall": float((out_of_fold[or_scene] >= threshold).mean()),
        "held_out_roc_auc_oob_and_or_scene_vs_inbody": roc_auc(out_of_fold[positive_or_inbody],
                                                                is_real_positive[positive_or_inbody]),
        "synthetic_check": {"oob_recall": float((check_scores[check_targets == 1] >= threshold).mean()),
                            "inbody_kept": float((check_scores[check_targets == 0] < threshold).mean())},
        "scoring_frames_per_second": frames_per_second,
        "held_out_by_file": {str(s.path.name): {"label": s.label, "group": g, "score": round(float(v), 6)}
                             for s, g, v in zip(stills, groups, out_of_fold)},
    }
    text = json.dumps(report, indent=2)
    if args.report is not None:
        args.report.write_text(text + "\n", encoding="utf-8")
    summary = {k: v for k, v in report.items() if k != "held_out_by_file"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
