"""Picture geometry and scan of the source, carried into every picture we encode.

Stream copy keeps the source's bytes, so copied groups keep everything; re-encoded pictures get the
first clip's values here: display rotation (a display matrix on the output track), sample aspect ratio
and colour description (in the encoder's VUI, hence in each re-encoded SPS), and interlacing (H.264 is
encoded interlaced, MBAFF, with the source's field order; no deinterlacing).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from ..media.frames import painted_black
from ..media.join import JoinPlan, VideoFormat
from ..media.probe import open_input

#: FFmpeg's AVFieldOrder: 1 progressive, 2 top field first, 3 bottom first, 4/5 mixed (top/bottom coded first).
FIELD_PROGRESSIVE = 1
TOP_FIELD_FIRST = (2, 4)
#: AVColorRange: 1 limited ("tv", MPEG), 2 full ("pc", JPEG).
RANGE_LIMITED, RANGE_FULL = 1, 2


@dataclass(frozen=True)
class Geometry:
    #: Counter-clockwise display rotation in degrees (0 when the track has no display matrix).
    rotation: int = 0
    #: Shape of one pixel (None: square or unknown).
    sample_aspect_ratio: Fraction | None = None
    #: FFmpeg's AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace values.
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2
    colorspace: int = 2
    interlaced: bool = False
    top_field_first: bool = True

    def to_json(self) -> dict[str, object]:
        sar = self.sample_aspect_ratio
        return {"rotation": self.rotation,
                "sample_aspect_ratio": f"{sar.numerator}:{sar.denominator}" if sar else None,
                "color": [self.color_range, self.color_primaries, self.color_trc, self.colorspace],
                "scan": ("interlaced, " + ("top" if self.top_field_first else "bottom") + " field first")
                if self.interlaced else "progressive"}


def read_geometry(plan: JoinPlan) -> Geometry | None:
    """The first clip's geometry, from its stream parameters and first decoded picture (None when no
    picture decodes: the encoders then keep their defaults and the verifier compares nothing)."""
    info = plan.clips[0].info
    with open_input(info.path) as container:
        stream = next(s for s in container.streams.video if s.index == info.video.index)
        context = stream.codec_context
        try:
            frame = next(container.decode(stream), None)
        except av.error.FFmpegError:
            frame = None
        sar = context.sample_aspect_ratio
        field_order = context.field_order
        if frame is None:
            return None
        interlaced = bool(frame.interlaced_frame) or field_order not in (0, FIELD_PROGRESSIVE)
        return Geometry(
            rotation=int(round(frame.rotation or 0)),
            sample_aspect_ratio=sar if sar and sar != 1 else None,
            color_range=int(frame.color_range or context.color_range or 0),
            color_primaries=int(frame.color_primaries or 2), color_trc=int(frame.color_trc or 2),
            colorspace=int(frame.colorspace or 2), interlaced=interlaced,
            top_field_first=field_order in TOP_FIELD_FIRST or field_order in (0, FIELD_PROGRESSIVE))


def apply_geometry(context: av.video.codeccontext.VideoCodecContext, geometry: Geometry | None, codec: str,
                   color_range: int | None = None) -> None:
    """Set an encoder so that its pictures carry ``geometry`` (before it is opened).  ``color_range``
    overrides the source's when the pixels were converted to another range."""
    if geometry is None:
        return
    if geometry.sample_aspect_ratio is not None:
        context.sample_aspect_ratio = geometry.sample_aspect_ratio
    context.color_range = geometry.color_range if color_range is None else color_range
    context.color_primaries = geometry.color_primaries
    context.color_trc = geometry.color_trc
    context.colorspace = geometry.colorspace
    if geometry.interlaced and codec == "h264":
        context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        context.field_order = 2 if geometry.top_field_first else 3


def scan_black_picture(plan: JoinPlan, fmt: VideoFormat, geometry: Geometry | None) -> av.VideoFrame | None:
    """For an interlaced source, video black that says so: encoders (x264) take each picture's field order
    from its frame flags, and a new frame has none (black pictures came out bottom field first between
    top-field-first ones).  Black is painted over the first decoded picture, which has them.  None for a
    progressive source, or when that picture is not yuv420p at ``fmt``'s size (plain black then serves)."""
    if geometry is None or not geometry.interlaced:
        return None
    info = plan.clips[0].info
    with open_input(info.path) as container:
        stream = next(s for s in container.streams.video if s.index == info.video.index)
        try:
            frame = next(container.decode(stream), None)
        except av.error.FFmpegError:
            return None
    if frame is None or frame.format.name != "yuv420p" or (frame.width, frame.height) != (fmt.width, fmt.height):
        return None
    return painted_black(frame)
