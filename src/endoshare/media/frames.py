"""Decoded frames of the merged timeline, normalised to one format, in presentation order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import UnreadableMediaError
from ..types import Cancel, check_cancelled
from .join import ClipPlan, JoinPlan, VideoFormat
from .probe import open_input


@dataclass(frozen=True)
class TimelineFrame:
    index: int
    frame: av.VideoFrame


def luma_plane(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane of a yuv420p frame as a (height, width) array (line padding removed)."""
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :plane.width]


def uint8_array(array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """``array`` itself, typed as 8-bit: what PyAV and OpenCV return for 8-bit pictures, whose typing says only
    "some array".  Anything else is a programming error (a 10-bit picture would need a conversion)."""
    if array.dtype != np.uint8:
        raise TypeError(f"expected an 8-bit picture, got {array.dtype}")
    return array


def picture_array(frame: av.VideoFrame, width: int | None = None, height: int | None = None, *,
                  format: str = "rgb24", interpolation: str | None = None) -> npt.NDArray[np.uint8]:
    """The picture as a (height, width, 3) array in a packed 8-bit ``format`` ("rgb24", "bgr24"), scaled to
    ``width`` x ``height`` when given (with FFmpeg's ``interpolation``, e.g. "AREA", else its default)."""
    scaled = frame.reformat(width=width or frame.width, height=height or frame.height, format=format,
                            interpolation=interpolation)
    return np.asarray(scaled.to_ndarray(), dtype=np.uint8)


def detail_energy(frame: av.VideoFrame) -> float:
    """Mean absolute luma gradient: high for a sharp picture, near zero for a blurred or flat one."""
    y = luma_plane(frame).astype(np.int16)
    return float(np.abs(np.diff(y, axis=1)).mean() + np.abs(np.diff(y, axis=0)).mean())


#: Video black in limited range, per yuv420p plane.
BLACK_YUV = (16, 128, 128)


def black_frame(fmt: VideoFormat) -> av.VideoFrame:
    """Video black (Y=16, U=V=128 in limited range)."""
    height, width = fmt.height, fmt.width
    yuv = np.empty((height * 3 // 2, width), np.uint8)
    yuv[:height] = BLACK_YUV[0]
    yuv[height:] = BLACK_YUV[1]
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def painted_black(frame: av.VideoFrame) -> av.VideoFrame:
    """A decoded yuv420p ``frame`` painted video black in place.  It keeps its frame flags (interlaced, field
    order), which PyAV cannot set on a new frame and which encoders read per picture."""
    frame.make_writable()
    for plane, value in zip(frame.planes, BLACK_YUV, strict=True):
        np.frombuffer(memoryview(plane), np.uint8)[:] = value
    return frame


def blurred_frame(frame: av.VideoFrame, fmt: VideoFormat) -> av.VideoFrame:
    """A picture shrunk to a few dozen pixels and blown up again: colours stay, nothing is recognisable."""
    small_w = max(2, fmt.width // 32 // 2 * 2)
    small_h = max(2, fmt.height // 32 // 2 * 2)
    tiny = frame.reformat(width=small_w, height=small_h, format="yuv420p", interpolation="AREA")
    return tiny.reformat(width=fmt.width, height=fmt.height, format="yuv420p", interpolation="BILINEAR")


def normalise(frame: av.VideoFrame, fmt: VideoFormat) -> av.VideoFrame:
    """``frame`` in the target size and pixel format; a different aspect ratio is letterboxed in black."""
    if frame.width == fmt.width and frame.height == fmt.height:
        return frame if frame.format.name == fmt.pix_fmt else frame.reformat(format=fmt.pix_fmt)
    scale = min(fmt.width / frame.width, fmt.height / frame.height)
    width = max(2, int(frame.width * scale) // 2 * 2)
    height = max(2, int(frame.height * scale) // 2 * 2)
    scaled = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    canvas = np.zeros((fmt.height, fmt.width, 3), np.uint8)
    top, left = (fmt.height - height) // 2, (fmt.width - width) // 2
    canvas[top:top + height, left:left + width] = scaled
    return av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format=fmt.pix_fmt)


def iter_clip_frames(clip: ClipPlan, fmt: VideoFormat) -> Iterator[TimelineFrame]:
    path = clip.info.path
    with open_input(path) as container:
        stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
        stream.thread_type = "AUTO"
        offset = 0
        source_index = -1
        try:
            for source_index, frame in enumerate(container.decode(stream)):
                while offset < clip.timeline_frames and clip.source_index(offset) == source_index:
                    yield TimelineFrame(clip.timeline_start + offset, normalise(frame, fmt))
                    offset += 1
        except av.error.FFmpegError as exc:
            raise UnreadableMediaError(f"{path} stops decoding at frame {source_index + 1} ({exc}); the "
                                       "recording is damaged: copy it again or remove it from the case.",
                                       path=path) from None
        if offset < clip.timeline_frames:
            raise UnreadableMediaError(
                f"{path} decoded to {source_index + 1} frames where its index lists {clip.source_frames}; "
                "the recording is damaged or truncated: copy it again or remove it from the case.", path=path)


def iter_timeline(plan: JoinPlan, cancel: Cancel | None = None) -> Iterator[TimelineFrame]:
    """Every frame of the merged timeline, in order, in ``plan.target`` format."""
    for clip in plan.clips:
        for item in iter_clip_frames(clip, plan.target):
            check_cancelled(cancel)
            yield item
