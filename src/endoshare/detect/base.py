"""The detector protocol: frames in, probability of "out of body" out.

A detector sees RGB frames already resized to its ``input_size`` (width, height) as one uint8 array
of shape (N, height, width, 3), in presentation order, and returns one float per frame in [0, 1]:
the probability that the camera was outside the patient.  A stateful detector (OOBNet's LSTM) keeps
its state between calls until :meth:`reset`, so the caller must feed a video's samples in order and
call ``reset()`` before the next video.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FrameBatch = npt.NDArray[np.uint8]      # (N, H, W, 3) RGB
Scores = npt.NDArray[np.float32]        # (N,) in [0, 1]


@runtime_checkable
class Detector(Protocol):
    name: str
    #: (width, height) that frames must be resized to before :meth:`score`.
    input_size: tuple[int, int]
    #: True when scores depend on earlier frames (the caller must then feed a regular sequence).
    stateful: bool
    #: Default decision threshold on the score.
    threshold: float

    def reset(self) -> None:
        """Forget all state: the next call starts a new video."""

    def score(self, frames: FrameBatch) -> Scores:
        """Probability of out-of-body for each frame of the batch."""


#: A detector may also define ``shrink(frames)``: full-size RGB frames (N, H, W, 3) → what ``score`` takes.
#: Video readers then pass it whole decoded frames instead of shrinking them with swscale, for a model that
#: was trained on another resize (OOBNet: TensorFlow's bilinear resize without antialiasing).
SHRINK_HOOK = "shrink"

#: A detector may also define ``exit_threshold``: the score below which an out-of-body span ends
#: (hysteresis), when it differs from ``threshold``.  Smoothing uses it unless the user sets thresholds.
EXIT_THRESHOLD_ATTRIBUTE = "exit_threshold"
