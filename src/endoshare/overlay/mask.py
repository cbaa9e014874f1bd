"""Fill rectangles of a picture with solid black (never blur: blurred text can often be read back)."""

from __future__ import annotations

from collections.abc import Iterable

import av
import numpy as np
import numpy.typing as npt

from ..media.frames import uint8_array
from .text import Box

#: Video black in limited range: Y=16, U=V=128.
FILL_Y, FILL_C = 16, 128


def yuv_planes(yuv: npt.NDArray[np.uint8], width: int, height: int) -> tuple[npt.NDArray[np.uint8], ...]:
    """Views of the Y, U and V planes in a yuv420p frame's ``to_ndarray()`` (Y rows, then the U and V
    planes packed one after the other; a chroma plane of an odd number of rows ends mid-row)."""
    flat = yuv.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (flat[:luma].reshape(height, width), flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2))


def mask_frame(frame: av.VideoFrame, boxes: Iterable[Box]) -> av.VideoFrame:
    """A yuv420p copy of ``frame`` with every box filled; ``frame`` itself when there is no box.

    Boxes are on even pixels (see :meth:`Box.grown`); an odd edge is widened so that no chroma sample
    half inside a box keeps the colour of the text.
    """
    boxes = tuple(boxes)
    if not boxes:
        return frame
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    width, height = frame.width, frame.height
    yuv = uint8_array(frame.to_ndarray())
    y, u, v = yuv_planes(yuv, width, height)
    for box in boxes:
        x0, y0 = box.x0 // 2 * 2, box.y0 // 2 * 2
        x1, y1 = min(width, -(-box.x1 // 2) * 2), min(height, -(-box.y1 // 2) * 2)
        y[y0:y1, x0:x1] = FILL_Y
        u[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = FILL_C
        v[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = FILL_C
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv), format="yuv420p")
    out.pts = frame.pts
    out.color_range = frame.color_range      # a full-range picture stays full range
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out
