"""Burned-in text: where it is on a picture (PP-OCR text detection) and what it says (PP-OCR recognition).

Both networks are the ONNX files that the PyPI package ``rapidocr`` ships inside its wheel (PP-OCRv6
"small", Apache-2.0, by the PaddleOCR authors); we run them with onnxruntime and do the pre- and
post-processing here.  We never import ``rapidocr`` itself: its package may download models that are
missing, and we want no network access at run time, ever.  A missing model file is a clear error.

Detection is all that decides what gets masked.  Recognition only labels a region for the report
("name-like", "date", "ID", "device settings"): a recognition miss must never leave text visible.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import WeightsError

#: The model files, inside the installed ``rapidocr`` package's ``models`` folder.
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: The detector sees the picture with its long side at most this many pixels (a multiple of 32).
DET_LONG_SIDE = 960
#: DB post-processing: pixel probability threshold, and mean probability a text box must reach.
PIXEL_THRESHOLD = 0.3
BOX_THRESHOLD = 0.5
#: DB predicts shrunk text kernels; a box is grown back by area * ratio / perimeter on each side.
UNCLIP_RATIO = 1.6
REC_HEIGHT = 48
#: Crops recognised in one run are at most this much wider than the narrowest of them (see
#: :meth:`TextDetector.read_many`).
RUN_WIDTH_SPREAD = 1.25

BGRImage = npt.NDArray[np.uint8]


@dataclass(frozen=True, order=True)
class Box:
    """An axis-aligned pixel rectangle ``x0 <= x < x1``, ``y0 <= y < y1`` in picture coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0 or self.x0 < 0 or self.y0 < 0:
            raise ValueError(f"box ({self.x0}, {self.y0})-({self.x1}, {self.y1}) is empty or negative")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def intersection(self, other: Box) -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(0, w) * max(0, h)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        return inter / (self.area + other.area - inter)

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def grown(self, pixels: int, width: int, height: int, pixels_y: int | None = None) -> Box:
        """Grown by ``pixels`` on the left and right (``pixels_y``, default the same, above and below),
        clipped to a ``width`` x ``height`` picture, on even pixels (so that a 4:2:0 chroma sample never
        straddles the edge of a mask)."""
        dy = pixels if pixels_y is None else pixels_y
        x0 = max(0, self.x0 - pixels) // 2 * 2
        y0 = max(0, self.y0 - dy) // 2 * 2
        x1 = min(width, -(-(self.x1 + pixels) // 2) * 2)
        y1 = min(height, -(-(self.y1 + dy) // 2) * 2)
        return Box(x0, y0, x1, y1)

    def to_json(self) -> dict[str, int]:
        return {"x": self.x0, "y": self.y0, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Box:
        x, y = int(data["x"]), int(data["y"])
        return cls(x, y, x + int(data["width"]), y + int(data["height"]))


def model_dir() -> Path:
    """The ``models`` folder of the installed ``rapidocr`` package, found without importing it."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("The text detector needs the Python package 'rapidocr' (it ships the PP-OCR model "
                           "files); install Endoshare with its dependencies: pip install endoshare")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.cache
def _session(name: str) -> Any:
    """One onnxruntime session per model file for the whole process (sessions may run concurrently)."""
    import onnxruntime

    path = model_dir() / name
    if not path.is_file():
        raise WeightsError(f"The text model {path} is missing; reinstall the 'rapidocr' package "
                           "(pip install --force-reinstall rapidocr). Endoshare never downloads models.",
                           path=path)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: most runs are on small crops, and spinning burns the CPU that
    # the decoder threads of out-of-body detection (running alongside) need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a damaged file
        raise WeightsError(f"The text model {path} cannot be loaded ({exc}); reinstall the 'rapidocr' "
                           "package.", path=path) from None


def _normalised(image: BGRImage) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 BGR → (1, 3, H, W) float32 in [-1, 1], as PP-OCR was trained."""
    scaled = image.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1)[None])


def detector_size(width: int, height: int, long_side: int = DET_LONG_SIDE) -> tuple[int, int]:
    """The size (multiples of 32) the detector sees a ``width`` x ``height`` picture at."""
    scale = min(1.0, long_side / max(width, height))
    return max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32)


class TextDetector:
    """PP-OCR text detection; :meth:`boxes` takes a BGR picture and returns text boxes in its pixels.

    Thread-safe (one onnxruntime session per detector, which may be called from several threads).
    """

    def __init__(self) -> None:
        self._det = _session(DET_MODEL)
        self._input = self._det.get_inputs()[0].name
        self._rec: Any = None
        self._characters: list[str] = []
        self._lock = threading.Lock()

    def probability(self, image: BGRImage) -> npt.NDArray[np.float32]:
        """The detector's text probability map for ``image`` (already at a multiple of 32)."""
        out = self._det.run(None, {self._input: _normalised(image)})[0]
        return np.asarray(out[0, 0], np.float32)

    def boxes(self, image: BGRImage, scale: tuple[float, float] = (1.0, 1.0)) -> list[Box]:
        """Text boxes of ``image`` (a picture already at a multiple-of-32 size), scaled by ``scale``
        (x, y) into the caller's coordinates."""
        import cv2

        prob = self.probability(image)
        bitmap = (prob > PIXEL_THRESHOLD).astype(np.uint8)
        bitmap = np.asarray(cv2.dilate(bitmap, np.ones((2, 2), np.uint8)), dtype=np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(bitmap, connectivity=8)
        found = []
        for label in range(1, count):
            x, y, w, h, pixels = (int(v) for v in stats[label])
            if min(w, h) < 2:
                continue
            score = float(prob[y:y + h, x:x + w][labels[y:y + h, x:x + w] == label].mean())
            if score < BOX_THRESHOLD:
                continue
            grow = w * h * UNCLIP_RATIO / (2 * (w + h))
            sx, sy = scale
            x0 = max(0, math.floor((x - grow) * sx))
            y0 = max(0, math.floor((y - grow) * sy))
            x1 = math.ceil((x + w + grow) * sx)
            y1 = math.ceil((y + h + grow) * sy)
            found.append(Box(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        return found

    def read(self, image: BGRImage) -> tuple[str, float]:
        """The text of a one-line crop and the recogniser's mean confidence (0..1)."""
        return self.read_many([image])[0]

    def read_many(self, images: list[BGRImage]) -> list[tuple[str, float]]:
        """:meth:`read` for several crops, in runs of the network over crops of about the same width (each
        padded on the right to the widest of its run, as PP-OCR batches them): the network's cost grows
        with the padded width, and a short line batched with a long one cost as much as the long one."""
        with self._lock:
            if self._rec is None:
                self._rec = _session(REC_MODEL)
                meta = self._rec.get_modelmeta().custom_metadata_map
                self._characters = ["", *meta["character"].splitlines(), " "]
        results: list[tuple[str, float]] = [("", 0.0)] * len(images)
        widths = {n: max(16, min(3200, math.ceil(REC_HEIGHT * image.shape[1] / image.shape[0])))
                  for n, image in enumerate(images) if min(image.shape[:2]) >= 2}
        batch: list[int] = []
        for n in sorted(widths, key=widths.__getitem__):
            if batch and widths[n] > RUN_WIDTH_SPREAD * widths[batch[0]]:
                self._recognise(images, batch, widths, results)
                batch = []
            batch.append(n)
        if batch:
            self._recognise(images, batch, widths, results)
        return results

    def _recognise(self, images: list[BGRImage], batch: list[int], widths: dict[int, int],
                   results: list[tuple[str, float]]) -> None:
        """One run of the recogniser over ``images[n]`` for each ``n`` in ``batch``, into ``results[n]``."""
        import cv2

        rows = np.zeros((len(batch), 3, REC_HEIGHT, max(widths[n] for n in batch)), np.float32)
        for row, n in enumerate(batch):
            crop = np.asarray(cv2.resize(np.ascontiguousarray(images[n]), (widths[n], REC_HEIGHT),
                                         interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
            rows[row, :, :, :widths[n]] = _normalised(crop)[0]
        out = self._rec.run(None, {self._rec.get_inputs()[0].name: rows})[0]
        for row, n in enumerate(batch):
            indices, probs = out[row].argmax(axis=1), out[row].max(axis=1)
            text, confidences, previous = [], [], -1
            for index, prob in zip(indices.tolist(), probs.tolist(), strict=True):
                if index != previous and index != 0 and index < len(self._characters):
                    text.append(self._characters[index])
                    confidences.append(prob)
                previous = index
            results[n] = ("".join(text).strip(), float(np.mean(confidences)) if confidences else 0.0)


_DEVICE_WORDS = re.compile(
    r"\b(mm ?hg|kpa|bar|psi|l/min|ml/min|ml|fps|hz|khz|mhz|db|iso|gain|wb|awb|shutter|zoom|flow|press(ure)?|"
    r"insuff?l?\w*|co2|temp|°c|watt|w|%|iris|enh(ance)?|nbi|fics|contrast|bright(ness)?|sat(uration)?|"
    r"exp(osure)?|mode|cut|coag|bipolar|mono(polar)?|light|lamp|ch\d|cam(era)?\s*\d?|f\d+|x\d+(\.\d+)?)\b",
    re.IGNORECASE)
_DATE = re.compile(r"\b(\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}|\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{2,4}|"
                   r"(dob|geb|born|birth)\w*)\b", re.IGNORECASE)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(:\d{2})?\b")
_ID = re.compile(r"\b([A-Za-z]{0,4}[-#: ]?\d{5,}|\d{2,}[A-Za-z]+\d+|(id|mrn|pid|pat|nr|no)\b\W*\w+)",
                 re.IGNORECASE)
_NAME = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ'\-]{2,}")


def classify(text: str) -> tuple[str, ...]:
    """What a recognised line looks like, for the report: any of "date", "time", "id", "name-like",
    "device-settings"; "unreadable" when nothing was recognised.  Never used to unmask anything except
    device settings, and only when every word is a device word and the user asked to keep them."""
    if not text.strip():
        return ("unreadable",)
    kinds = []
    if _DATE.search(text):
        kinds.append("date")
    if _TIME.search(text):
        kinds.append("time")
    if _ID.search(text):
        kinds.append("id")
    rest = _DEVICE_WORDS.sub(" ", _DATE.sub(" ", _TIME.sub(" ", _ID.sub(" ", text))))
    words = [w for w in _NAME.findall(rest) if not w.isupper() or len(w) > 2]
    if words:
        kinds.append("name-like")
    if _DEVICE_WORDS.search(text):
        kinds.append("device-settings")
    return tuple(kinds) or ("other",)


def only_device_settings(text: str, confidence: float, min_confidence: float = 0.8) -> bool:
    """True when a recognised line is, beyond doubt, device settings only: read with confidence, and
    nothing left once device words, numbers and units are taken away."""
    if confidence < min_confidence or not _DEVICE_WORDS.search(text):
        return False
    identifier = _ID.search(text)
    if _DATE.search(text) or identifier and not re.fullmatch(r"[\d\s.,:%/x+\-]*", identifier[0]):
        return False
    rest = _DEVICE_WORDS.sub(" ", text)
    return re.fullmatch(r"[\s\d.,:;%/°+\-x|=()\[\]]*", rest) is not None
