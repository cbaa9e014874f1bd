"""The built-in out-of-body detector: hand-made colour and layout features + logistic regression.

It needs nothing but numpy and a few-kilobyte model file shipped with the package, so Endoshare can
redact out-of-body scenes with no download.  Why these features:

* inside the patient the scope sees tissue lit from its own tip: red, pink and yellow hues, red the
  dominant channel almost everywhere, specular highlights, light falling off from the centre, and
  the black surround of the circular/octagonal field stop;
* outside, it sees an operating room: blue/green drapes and gowns, grey/white walls and tables,
  lamps, straight man-made edges, text on screens — lit by the room, not by the scope.

How the model was trained and how well it does on development data: ``docs/builtin-detector.md``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import WeightsError
from .base import FrameBatch, Scores

#: (width, height) frames are resized to, from the full frame (16:9 like most recorders).
INPUT_SIZE = (96, 54)
MODEL_FORMAT_VERSION = 1
_HUE_BINS = 12

Features = npt.NDArray[np.float32]

FEATURE_NAMES: tuple[str, ...] = (
    "corner_dark", "dark", "inner_lit", "centre_luma", "rim_luma", "log_centre_rim_ratio",
    "luma_std", "bright", "bright_grey", "grey", "saturation",
    "red_share", "green_share", "blue_share", "red_not_dominant", "blue_dominant", "green_over_red",
    "vivid_red", "pale", "saturated",
    "edge_density", "strong_edges", "axis_aligned_edges",
    *(f"hue_{i * 360 // _HUE_BINS:03d}" for i in range(_HUE_BINS)),
)


def default_model_path() -> Path:
    """The model file shipped inside the package."""
    return Path(__file__).with_name("builtin_model.npz")


@lru_cache(maxsize=8)
def _region_masks(width: int, height: int) -> tuple[npt.NDArray[np.bool_], ...]:
    """Corner patches (where a field stop is black), centre disc, rim ring and inner disc (read-only)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xn = (xs - (width - 1) / 2) / height
    yn = (ys - (height - 1) / 2) / height
    r = np.sqrt(xn * xn + yn * yn)
    corner = (np.abs(xn) > width / height / 2 - 0.12) & (np.abs(yn) > 0.5 - 0.12)
    centre = r < 0.22
    rim = (r > 0.36) & (r < 0.5)
    inner = r < 0.42
    for mask in (corner, centre, rim, inner):
        mask.flags.writeable = False  # shared by every call through the cache
    return corner, centre, rim, inner


def extract_features(frames: FrameBatch) -> Features:
    """One row of :data:`FEATURE_NAMES` per frame; pure numpy, vectorised over the batch."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got {frames.shape}")
    n, height, width, _ = frames.shape
    # Channel planes made contiguous once: every later element-wise step runs several times faster.
    red, green, blue = np.moveaxis(frames, -1, 0).astype(np.float32) * np.float32(1 / 255)
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    corner, centre, rim, inner = _region_masks(width, height)
    eps = np.float32(1e-3)

    dark = luma < 0.08
    lit = ~dark
    lit_count = lit.sum(axis=(1, 2)).astype(np.float32) + 1

    lit_flat = lit.reshape(n, -1)
    lit_weights = lit_flat.astype(np.float32)

    def lit_mean(values: npt.NDArray[np.float32] | npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        flat = values.reshape(n, -1)
        if flat.dtype == np.bool_:
            return np.count_nonzero(flat & lit_flat, axis=1).astype(np.float32) / lit_count
        return np.einsum("np,np->n", flat, lit_weights) / lit_count

    top = np.maximum(np.maximum(red, green), blue)
    chroma = top - np.minimum(np.minimum(red, green), blue)
    saturation = chroma / (top + eps)
    grey = chroma < 0.07
    bright = luma > 0.85

    centre_luma = luma[:, centre].mean(axis=1)
    rim_luma = luma[:, rim].mean(axis=1)
    luma_lit_mean = lit_mean(luma)
    luma_std = np.sqrt(np.maximum(lit_mean(luma * luma) - luma_lit_mean ** 2, 0))
    channel_sum = red + green + blue + eps

    # Gradients of luma where both pixels are lit, so the field-stop edge does not count as texture.
    dx = np.abs(np.diff(luma, axis=2))[:, :-1, :]
    dy = np.abs(np.diff(luma, axis=1))[:, :, :-1]
    both_lit = lit[:, :-1, :-1] & lit[:, 1:, :-1] & lit[:, :-1, 1:]
    magnitude = np.where(both_lit, dx + dy, 0)
    inner_count = both_lit.sum(axis=(1, 2)).astype(np.float32) + 1
    strong = magnitude > 0.12
    axis_aligned = strong & ((dx > 4 * dy) | (dy > 4 * dx))

    # Hue histogram weighted by chroma: where on the colour wheel the picture's colour lies.
    hue = np.arctan2(np.float32(np.sqrt(3)) * (green - blue), 2 * red - green - blue)
    # Shifted by one turn so the value is positive: bin i covers [i, i+1) * 30 deg from red.
    hue_bin = (hue * np.float32(_HUE_BINS / (2 * np.pi)) + np.float32(_HUE_BINS)).astype(np.int32) % _HUE_BINS
    weights = np.where(lit, chroma, 0).reshape(n, -1)
    index = (np.arange(n)[:, None] * _HUE_BINS + hue_bin.reshape(n, -1)).ravel()
    hist = np.bincount(index, weights=weights.ravel(), minlength=n * _HUE_BINS).reshape(n, _HUE_BINS)
    hist = hist / (hist.sum(axis=1, keepdims=True) + eps)

    columns = [
        dark[:, corner].mean(axis=1),
        dark.mean(axis=(1, 2)),
        # How much of the central disc the field stop leaves open (its radius, roughly).
        np.count_nonzero(lit[:, inner], axis=1) / np.float32(inner.sum()),
        centre_luma,
        rim_luma,
        np.log((centre_luma + 0.02) / (rim_luma + 0.02)),
        luma_std,
        lit_mean(bright),
        lit_mean(bright & grey),
        lit_mean(grey & ~bright),
        lit_mean(saturation),
        lit_mean(red / channel_sum),
        lit_mean(green / channel_sum),
        lit_mean(blue / channel_sum),
        lit_mean((red < top) & ~grey),
        lit_mean((blue >= top) & ~grey),
        lit_mean(np.clip(green - red, 0, None)),
        lit_mean((saturation > 0.55) & ((red >= top) & (blue < 0.6 * red))),
        lit_mean((saturation < 0.3) & (luma > 0.3)),
        lit_mean(saturation > 0.45),
        magnitude.sum(axis=(1, 2)) / inner_count,
        strong.sum(axis=(1, 2)) / inner_count,
        axis_aligned.sum(axis=(1, 2)) / (strong.sum(axis=(1, 2)) + 1),
    ]
    return np.concatenate([np.stack(columns, axis=1), hist], axis=1).astype(np.float32)


@dataclass(frozen=True, eq=False)
class BuiltinModel:
    """Standardised logistic regression over :func:`extract_features`."""

    feature_mean: Features
    feature_scale: Features
    weights: Features
    bias: float
    threshold: float
    input_size: tuple[int, int] = INPUT_SIZE

    def logits(self, features: Features) -> Features:
        z = (features - self.feature_mean) / self.feature_scale
        return (z @ self.weights + np.float32(self.bias)).astype(np.float32)

    def predict(self, features: Features) -> Scores:
        return (1 / (1 + np.exp(-np.clip(self.logits(features), -40, 40)))).astype(np.float32)

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as stream:
            np.savez_compressed(
                stream, format_version=np.int32(MODEL_FORMAT_VERSION),
                feature_names=np.array(FEATURE_NAMES), input_size=np.array(self.input_size, np.int32),
                feature_mean=self.feature_mean.astype(np.float32),
                feature_scale=self.feature_scale.astype(np.float32),
                weights=self.weights.astype(np.float32), bias=np.float32(self.bias),
                threshold=np.float32(self.threshold))

    @classmethod
    def load(cls, path: str | Path) -> "BuiltinModel":
        path = Path(path)
        hint = ("reinstall Endoshare, or rebuild it with `python tools/train_builtin.py` "
                "(docs/builtin-detector.md)")
        if not path.is_file():
            raise WeightsError(f"built-in detector model file {path} does not exist; {hint}", path=path)
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                names = tuple(str(s) for s in data["feature_names"])
                input_size = tuple(int(v) for v in data["input_size"])
                model = cls(feature_mean=data["feature_mean"].astype(np.float32),
                            feature_scale=data["feature_scale"].astype(np.float32),
                            weights=data["weights"].astype(np.float32), bias=float(data["bias"]),
                            threshold=float(data["threshold"]),
                            input_size=(input_size[0], input_size[1]))
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"built-in detector model file {path} is truncated or not a model "
                               f"file ({exc}); {hint}", path=path) from exc
        if version != MODEL_FORMAT_VERSION or names != FEATURE_NAMES or input_size != INPUT_SIZE:
            raise WeightsError(f"built-in detector model file {path} was made for another version "
                               f"of the feature set; {hint}", path=path)
        count = len(FEATURE_NAMES)
        shapes_ok = all(a.shape == (count,) for a in (model.feature_mean, model.feature_scale, model.weights))
        if not shapes_ok or not np.all(np.isfinite(model.weights)) or np.any(model.feature_scale <= 0) \
                or not 0 < model.threshold < 1:
            raise WeightsError(f"built-in detector model file {path} holds inconsistent values; {hint}",
                               path=path)
        return model


class BuiltinDetector:
    """Out-of-body probability from colour and layout; stateless, CPU, numpy only."""

    name = "builtin"
    stateful = False
    input_size = INPUT_SIZE

    def __init__(self, model_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.model = BuiltinModel.load(self.model_path)
        #: Chosen on held-out development data for high out-of-body recall (see the docs).
        self.threshold = self.model.threshold

    def reset(self) -> None:
        """Nothing to forget: every frame is scored on its own."""

    def score(self, frames: FrameBatch) -> Scores:
        width, height = self.input_size
        if frames.ndim != 4 or frames.shape[1:] != (height, width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"the built-in detector takes uint8 frames of shape (N, {height}, {width}, 3), "
                             f"got {frames.dtype} {frames.shape}; resize frames to input_size first")
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.model.predict(extract_features(frames))
