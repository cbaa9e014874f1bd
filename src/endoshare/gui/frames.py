"""Frame-accurate random access to a case's merged timeline, for thumbnails and the review player.

Seeking goes to the keyframe before the wanted frame and decodes forward, so showing one frame never
decodes the whole case; consecutive requests (playback) just decode the next frame.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import UnreadableMediaError
from ..media.frames import black_frame, blurred_frame, normalise, picture_array
from ..media.join import ClipPlan, JoinPlan
from ..media.probe import open_input

RGB = npt.NDArray[np.uint8]
#: Decoding forward this many frames is cheaper than a new seek (typical GOP lengths are 12-250).
FORWARD_DECODE_LIMIT = 64


class FrameSource:
    """Frames of ``plan``'s merged timeline by global index, normalised to the target format."""

    def __init__(self, plan: JoinPlan) -> None:
        self.plan = plan
        self._starts = [c.timeline_start for c in plan.clips]
        self._clip: ClipPlan | None = None
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._last: tuple[int, av.VideoFrame] | None = None   # source index, frame

    @property
    def total_frames(self) -> int:
        return self.plan.total_frames

    @property
    def frame_rate(self) -> Fraction:
        return self.plan.target.frame_rate

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = self._frames = self._clip = self._last = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clip_at(self, index: int) -> ClipPlan:
        if not 0 <= index < self.total_frames:
            raise IndexError(f"frame {index} is outside the case's {self.total_frames} frames")
        return self.plan.clips[bisect.bisect_right(self._starts, index) - 1]

    def frame(self, index: int) -> av.VideoFrame:
        clip = self.clip_at(index)
        source = clip.source_index(index - clip.timeline_start)
        if clip is not self._clip:
            self.close()
            self._clip = clip
            self._container = open_input(clip.info.path)
            self._stream = next(s for s in self._container.streams.video if s.index == clip.info.video.index)
        if self._last is not None and self._last[0] == source:
            return normalise(self._last[1], self.plan.target)
        if self._last is None or not self._last[0] < source <= self._last[0] + FORWARD_DECODE_LIMIT:
            self._seek(clip, source)
        return normalise(self._decode_until(clip, source), self.plan.target)

    def rgb(self, index: int, width: int | None = None, height: int | None = None) -> RGB:
        frame = self.frame(index)
        if width and not height:
            height = max(2, round(frame.height * width / frame.width / 2) * 2)
        return picture_array(frame, width, height)

    def _source_index(self, clip: ClipPlan, frame: av.VideoFrame, counted: int) -> int:
        assert self._stream is not None
        if frame.pts is None or self._stream.time_base is None:
            return counted
        start = self._stream.start_time or 0
        return round((frame.pts - start) * self._stream.time_base * clip.source_rate)

    def _seek(self, clip: ClipPlan, source: int) -> None:
        assert self._container is not None and self._stream is not None
        self._last = None
        start = self._stream.start_time or 0
        if source == 0 or self._stream.time_base is None:
            self._container.seek(start, stream=self._stream, backward=True)
        else:
            pts = start + int(Fraction(source) / clip.source_rate / self._stream.time_base)
            self._container.seek(pts, stream=self._stream, backward=True)
        self._frames = self._container.decode(self._stream)

    def _decode_until(self, clip: ClipPlan, source: int, restarted: bool = False) -> av.VideoFrame:
        assert self._frames is not None
        path = clip.info.path
        previous: tuple[int, av.VideoFrame] | None = self._last
        try:
            for frame in self._frames:
                here = self._source_index(clip, frame, previous[0] + 1 if previous else 0)
                if here > source and previous is None and not restarted:
                    # The seek landed after the frame (no keyframe index): start the clip over.
                    self._seek(clip, 0)
                    return self._decode_until(clip, source, restarted=True)
                if here >= source:
                    # A frame-rate gap (VFR) shows the last frame at or before the wanted time.
                    chosen = (here, frame) if here == source or previous is None else previous
                    self._last = (here, frame)
                    return chosen[1]
                previous = (here, frame)
        except av.error.FFmpegError as exc:
            raise UnreadableMediaError(f"{path} stops decoding near frame {source} ({exc}); the recording is "
                                       "damaged: copy it again or remove it from the case.", path=path) from None
        if previous is not None:
            self._last = previous
            return previous[1]
        raise UnreadableMediaError(f"{path} has no frame {source}; the recording is damaged or truncated.",
                                   path=path)


def clip_thumbnail(path: Path, at_seconds: float = 1.0, width: int = 240) -> RGB:
    """A small RGB picture of ``path`` at about ``at_seconds`` (its last frame if shorter)."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        target = None
        if stream.time_base is not None:
            target = (stream.start_time or 0) + int(Fraction(at_seconds).limit_denominator(1000) / stream.time_base)
            container.seek(target, stream=stream, backward=True)
        chosen = None
        try:
            for frame in container.decode(stream):
                chosen = frame
                if target is None or frame.pts is None or frame.pts >= target:
                    break
        except av.error.FFmpegError as exc:
            raise UnreadableMediaError(f"{path} cannot be decoded ({exc}); the recording is damaged: copy it "
                                       "again or remove it from the case.", path=path) from None
        if chosen is None:
            raise UnreadableMediaError(f"{path} holds no decodable picture; remove it from the case.", path=path)
        height = max(2, round(chosen.height * width / chosen.width / 2) * 2)
        return picture_array(chosen, width, height)


def output_rgb(source: FrameSource, index: int, redaction: str, redacted: bool,
               width: int | None = None) -> RGB | None:
    """Frame ``index`` as the output shows it: the source frame, video black, or the renderer's blur of it
    (the same functions the renderer uses).  None for a frame that ``cut`` removes from the output."""
    if not redacted:
        return source.rgb(index, width)
    if redaction == "cut":
        return None
    target = source.plan.target
    frame = black_frame(target) if redaction == "black" else blurred_frame(source.frame(index), target)
    height = max(2, round(frame.height * width / frame.width / 2) * 2) if width else frame.height
    return picture_array(frame, width, height)
