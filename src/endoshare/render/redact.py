"""The one place where a frame is redacted (black, blurred or cut), shared by every renderer.

A :class:`Redactor` is given each frame that the output would show, whether it is redacted, and the
output index it lands on; it returns the picture to encode (or None when the frame is cut) and records
what the verifier must find there (black frames, and the source detail of blurred ones).
"""

from __future__ import annotations

import av

from ..media.frames import black_frame, blurred_frame, detail_energy
from ..media.join import VideoFormat
from .common import Redaction


class Redactor:
    """Applies one redaction to frames of one format and remembers what it did, by output index."""

    def __init__(self, redaction: Redaction, fmt: VideoFormat) -> None:
        self.redaction = redaction
        self.fmt = fmt
        self.black: list[int] = []
        self.blurred: dict[int, float] = {}

    def apply(self, frame: av.VideoFrame, redacted: bool, out_index: int) -> av.VideoFrame | None:
        """The picture to write at ``out_index`` for ``frame`` (yuv420p in ``fmt``'s size), or None if cut."""
        if frame.format.name != "yuv420p" or frame.width != self.fmt.width or frame.height != self.fmt.height:
            frame = frame.reformat(width=self.fmt.width, height=self.fmt.height, format="yuv420p")
        if not redacted:
            return frame
        if self.redaction is Redaction.CUT:
            return None
        if self.redaction is Redaction.BLACK:
            self.black.append(out_index)
            return black_frame(self.fmt)
        self.blurred[out_index] = detail_energy(frame)
        return blurred_frame(frame, self.fmt)

