"""The one place where a frame is redacted (black, blurred or cut), shared by every renderer.

A :class:`Redactor` is given each frame that the output would show, whether it is redacted, and the
output index it lands on; it returns the picture to encode (or None when the frame is cut) and records
what the verifier must find there (black frames, and the source detail of blurred ones).  Burned-in
text regions (:class:`~endoshare.overlay.regions.OverlaySet`) are filled with black in every frame
they apply to, here too, so that both renderers mask alike.
"""

from __future__ import annotations

import math

import av

from ..media.frames import black_frame, blurred_frame, detail_energy
from ..media.join import VideoFormat
from ..overlay.mask import mask_frame
from ..overlay.regions import OverlaySet
from ..overlay.text import Box
from .common import Redaction
from .geometry import RANGE_FULL


class Redactor:
    """Applies one redaction to frames of one format and remembers what it did, by output index."""

    def __init__(self, redaction: Redaction, fmt: VideoFormat, keep_range: bool = False,
                 overlays: OverlaySet | None = None, source: VideoFormat | None = None,
                 black: av.VideoFrame | None = None) -> None:
        """``overlays`` are in ``source`` pixels (the merged timeline's; ``fmt``'s when not given); ``black``:
        the black picture to use (one with the source's scan flags, :func:`.geometry.scan_black_picture`)."""
        self.redaction = redaction
        self.fmt = fmt
        #: Keep a full-range (yuvj420p) source's sample values instead of converting them to limited range
        #: (re-encoded groups that sit between copied ones must match them).
        self.keep_range = keep_range
        self.overlays = overlays if overlays else None
        source = source or fmt
        self.scale = (fmt.width / source.width, fmt.height / source.height)
        self.black: list[int] = []
        self.blurred: dict[int, float] = {}
        self._black_picture = black
        #: Output frames that had burned-in text regions filled.
        self.masked = 0

    def boxes(self, timeline_index: int) -> tuple[Box, ...]:
        """The overlay rectangles of a timeline frame, in ``fmt`` pixels (rounded outwards)."""
        if self.overlays is None:
            return ()
        sx, sy = self.scale
        return tuple(Box(math.floor(b.x0 * sx), math.floor(b.y0 * sy), min(self.fmt.width, math.ceil(b.x1 * sx)),
                         min(self.fmt.height, math.ceil(b.y1 * sy))) for b in self.overlays.boxes_at(timeline_index))

    def apply(self, frame: av.VideoFrame, redacted: bool, out_index: int,
              timeline_index: int) -> av.VideoFrame | None:
        """The picture to write at ``out_index`` for timeline frame ``timeline_index`` (yuv420p in
        ``fmt``'s size), or None if cut."""
        # A full-range source (yuvj420p, or yuv420p flagged full) keeps its sample values when asked to, and
        # is otherwise converted to the limited range that the output then declares.
        full = frame.format.name == "yuvj420p" or frame.color_range == RANGE_FULL
        converts_range = full and not self.keep_range
        if (converts_range or frame.format.name != "yuv420p" or frame.width != self.fmt.width
                or frame.height != self.fmt.height):
            frame = frame.reformat(width=self.fmt.width, height=self.fmt.height, format="yuv420p",
                                   src_color_range="JPEG" if full else None,
                                   dst_color_range=("MPEG" if converts_range else "JPEG") if full else None)
        # A redacted frame is black, cut, or blurred past reading (1/32 of its size): no mask needed.
        boxes = self.boxes(timeline_index) if not redacted else ()
        if boxes:
            frame = mask_frame(frame, boxes)
            self.masked += 1
        if not redacted:
            return frame
        if self.redaction is Redaction.CUT:
            return None
        if self.redaction is Redaction.BLACK:
            return self.replacement(out_index)
        self.blurred[out_index] = detail_energy(frame)
        return blurred_frame(frame, self.fmt)

    def replaces_all(self, redacted: list[bool]) -> bool:
        """True when every one of these frames is redacted and the redaction does not depend on the picture
        (black or cut): their source pictures need not even be decoded."""
        return self.redaction is not Redaction.BLUR and all(redacted)

    def replacement(self, out_index: int) -> av.VideoFrame | None:
        """What a redacted frame becomes without looking at it (black, or None when cut)."""
        if self.redaction is Redaction.CUT:
            return None
        if self.redaction is not Redaction.BLACK:
            raise ValueError("a blurred frame is made from its source picture")
        self.black.append(out_index)
        # One black picture serves every such frame: encoders copy the pixels they are given.
        if self._black_picture is None:
            self._black_picture = black_frame(self.fmt)
        return self._black_picture
