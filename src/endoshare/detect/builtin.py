"""The built-in out-of-body detector: an ImageNet-pretrained backbone with a trained head, run by onnxruntime.

The model file shipped inside the package (``oob_lite0.onnx``) maps uint8 RGB frames, squashed whole to a
square of ``input_size``, to the probability that the camera was outside the patient.  It holds the
EfficientNet-Lite0 feature extractor (ImageNet weights, Apache-2.0) followed by a logistic-regression head
trained on the development frames whose licence allows it and on generated pictures
(``tools/train_detector.py``); the decision threshold and the training provenance are in the model's
metadata.  Nothing is downloaded: the file is package data, onnxruntime runs it on the CPU.

Why a learned backbone and not colour rules: out-of-body views share no colour (blue drapes, skin,
white walls, a glove, a monitor, a black no-signal screen), and in-body views are not always red or framed
by a field stop (zoomed views, fat, smoke); features learned on a million natural pictures separate
"tissue close-up lit from the tip" from "a room, an object, a screen" far better (docs/builtin-detector.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from .base import FrameBatch, Scores

MODEL_FILE = "oob_lite0.onnx"
#: Metadata keys the model file must carry.
THRESHOLD_KEY = "endoshare.threshold"
EXIT_THRESHOLD_KEY = "endoshare.exit_threshold"
TRAINING_KEY = "endoshare.training"


def default_model_path() -> Path:
    """The model file shipped inside the package."""
    return Path(__file__).with_name(MODEL_FILE)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads must not spin: the video decoder's threads need the same cores between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class BuiltinDetector:
    """Out-of-body probability per frame; stateless, CPU, onnxruntime + numpy."""

    name = "builtin"
    stateful = False

    def __init__(self, model_path: str | Path | None = None, threads: int = 2) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        hint = ("reinstall Endoshare, or rebuild the model with `python tools/train_detector.py` "
                "(docs/builtin-detector.md)")
        if not self.model_path.is_file():
            raise WeightsError(f"built-in detector model file {self.model_path} does not exist; {hint}",
                               path=self.model_path)
        try:
            self._session = _session(self.model_path, threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors for any unreadable file
            raise WeightsError(f"built-in detector model file {self.model_path} is truncated or not an ONNX "
                               f"model ({str(exc).splitlines()[0][:200]}); {hint}", path=self.model_path) from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        metadata = self._session.get_modelmeta().custom_metadata_map
        try:
            threshold = float(metadata[THRESHOLD_KEY])
            exit_threshold = float(metadata.get(EXIT_THRESHOLD_KEY, threshold))
        except (KeyError, ValueError):
            threshold = exit_threshold = float("nan")
        if (shape is None or len(shape) != 4 or not isinstance(shape[1], int) or shape[1] != shape[2]
                or shape[3] != 3 or inputs[0].type != "tensor(uint8)" or len(outputs) != 1
                or not 0.0 < exit_threshold <= threshold < 1.0):
            raise WeightsError(f"built-in detector model file {self.model_path} is not an Endoshare detector "
                               "(it must take uint8 frames (N, S, S, 3), give one score per frame and state "
                               f"its threshold); {hint}", path=self.model_path)
        self._input_name = inputs[0].name
        size = int(shape[1])
        #: (width, height) every frame is squashed to, whatever its aspect ratio (the model was trained so).
        self.input_size = (size, size)
        #: Entry and exit thresholds of the hysteresis, chosen on cross-validated, video-level behaviour of
        #: the development set (docs/builtin-detector.md): a span starts at a frame scoring ``threshold`` and
        #: goes on through frames scoring ``exit_threshold``, so a hard frame inside an excursion is carried.
        self.threshold = threshold
        self.exit_threshold = exit_threshold
        self.training: dict[str, Any] = json.loads(metadata.get(TRAINING_KEY, "{}") or "{}")

    def reset(self) -> None:
        """Nothing to forget: every frame is scored on its own."""

    def score(self, frames: FrameBatch) -> Scores:
        width, height = self.input_size
        if frames.ndim != 4 or frames.shape[1:] != (height, width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"the built-in detector takes uint8 frames of shape (N, {height}, {width}, 3), "
                             f"got {frames.dtype} {frames.shape}; resize frames to input_size first")
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        (scores,) = self._session.run(None, {self._input_name: np.ascontiguousarray(frames)})
        return np.asarray(scores, dtype=np.float32).reshape(-1)
