"""How a case's clips become one timeline: stream copy when they match, otherwise normalise.

The *merged timeline* is what every other step counts frames on: the clips' displayed frames one after
the other, after normalisation (a clip at another frame rate is resampled to the target rate by
picking source frames, so its count changes in a way we know exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from .nal import record_hides_slices
from .probe import MediaInfo
from .scrub import SCRUBBABLE_CODECS


class JoinDifference(StrEnum):
    """Why a clip cannot be stream-copied into the merged timeline as it is."""

    RESOLUTION = "resolution"
    PIXEL_FORMAT = "pixel format"
    FRAME_RATE = "frame rate"
    CODEC = "codec"
    #: Same codec, other SPS/PPS (or VPS) than the first clip's.
    PARAMETER_SETS = "parameter sets"
    #: Frames hidden by an MP4 edit list: copying them would carry frames nobody checked.
    HIDDEN_FRAMES = "hidden frames"
    #: Parameter sets that allow redundant slices or slice groups, which decoders skip.
    HIDDEN_SLICES = "hidden slices"
    #: The first clip's codec is not one whose metadata units fast mode can remove: the whole case is re-encoded.
    UNSCRUBBABLE_CODEC = "unscrubbable codec"

    @property
    def visible(self) -> bool:
        """A difference a person sees when watching the clips (the others are technicalities)."""
        return self in (JoinDifference.RESOLUTION, JoinDifference.PIXEL_FORMAT, JoinDifference.FRAME_RATE,
                        JoinDifference.CODEC)


@dataclass(frozen=True)
class Mismatch:
    """One reason for re-encoding: its kind, a sentence for people, and the clip (0-based) it is about."""

    kind: JoinDifference
    detail: str
    #: None when it concerns the whole case.
    clip: int | None = None

    def __str__(self) -> str:
        return self.detail if self.clip is None else f"clip {self.clip + 1}: {self.detail}"


@dataclass(frozen=True)
class VideoFormat:
    width: int
    height: int
    pix_fmt: str
    frame_rate: Fraction

    def to_json(self) -> dict[str, object]:
        return {"width": self.width, "height": self.height, "pix_fmt": self.pix_fmt,
                "frame_rate": f"{self.frame_rate.numerator}/{self.frame_rate.denominator}"}


@dataclass(frozen=True)
class ClipPlan:
    info: MediaInfo
    source_frames: int
    source_rate: Fraction
    target_rate: Fraction
    #: First frame of this clip on the merged timeline.
    timeline_start: int
    #: Frames this clip contributes to the merged timeline.
    timeline_frames: int
    #: Why this clip cannot be copied as it is (empty when it matches the target).
    differences: tuple[Mismatch, ...]

    def source_index(self, timeline_offset: int) -> int:
        """Source frame shown at ``timeline_offset`` frames into this clip (frame-rate resampling)."""
        return min(self.source_frames - 1,
                   int(Fraction(timeline_offset) * self.source_rate / self.target_rate))


@dataclass(frozen=True)
class JoinPlan:
    clips: tuple[ClipPlan, ...]
    target: VideoFormat
    #: Why the clips are not copy-compatible (empty when they are): the case's, then each clip's.
    mismatches: tuple[Mismatch, ...]

    @property
    def copy_compatible(self) -> bool:
        """True when every clip can be stream-copied into one MP4 track."""
        return not self.mismatches

    @property
    def reasons(self) -> tuple[str, ...]:
        """The mismatches as sentences (for the report and error messages)."""
        return tuple(str(m) for m in self.mismatches)

    @property
    def total_frames(self) -> int:
        return sum(c.timeline_frames for c in self.clips)

    @property
    def codec(self) -> str:
        return self.clips[0].info.video.codec


def timeline_frames_for(source_frames: int, source_rate: Fraction, target_rate: Fraction) -> int:
    """Frames a clip fills at ``target_rate``: enough to cover its duration, never more."""
    if source_rate == target_rate:
        return source_frames
    exact = Fraction(source_frames) * target_rate / source_rate
    return max(1, -((-exact.numerator) // exact.denominator))


def plan_join(infos: list[MediaInfo]) -> JoinPlan:
    """Decide the target format (the first clip's, made even and 8-bit 4:2:0: yuv420p, or yuvj420p for a
    full-range first clip, so that its pictures can be copied) and how each clip gets there."""
    if not infos:
        raise ValueError("a case needs at least one clip")
    first = infos[0].video
    assert first.width and first.height
    rate = first.frame_rate or Fraction(25)
    pix_fmt = "yuvj420p" if first.pix_fmt == "yuvj420p" else "yuv420p"
    target = VideoFormat(first.width - first.width % 2, first.height - first.height % 2, pix_fmt, rate)
    mismatches: list[Mismatch] = []
    clips: list[ClipPlan] = []
    start = 0
    for n, info in enumerate(infos):
        video = info.video
        source_rate = video.frame_rate or rate
        diffs: list[tuple[JoinDifference, str]] = []
        if (video.width, video.height) != (target.width, target.height):
            diffs.append((JoinDifference.RESOLUTION, f"resolution {video.width}x{video.height} differs from "
                                                     f"{target.width}x{target.height}"))
        if video.pix_fmt != target.pix_fmt:
            diffs.append((JoinDifference.PIXEL_FORMAT, f"pixel format {video.pix_fmt} differs from {target.pix_fmt}"))
        if source_rate != target.frame_rate:
            diffs.append((JoinDifference.FRAME_RATE, f"frame rate {source_rate} differs from {target.frame_rate}"))
        if video.codec != first.codec:
            diffs.append((JoinDifference.CODEC, f"codec {video.codec} differs from {first.codec}"))
        elif video.extradata != first.extradata:
            diffs.append((JoinDifference.PARAMETER_SETS, "codec parameter sets (SPS/PPS) differ from the first clip's"))
        if video.hidden_packets:
            diffs.append((JoinDifference.HIDDEN_FRAMES, f"{video.hidden_packets} frames hidden by an edit list (they "
                                                        "must not be copied)"))
        if record_hides_slices(video.extradata, video.codec):
            diffs.append((JoinDifference.HIDDEN_SLICES, "its parameter sets allow slices that decoders skip "
                                                        "(redundant slices or slice groups): they must not be copied"))
        # Packets without a timestamp do not make a clip incompatible: the splicer rebuilds the times from
        # frame order when no picture is reordered, and refuses otherwise (render/smart.py).
        frames = video.frame_count or 0
        timeline = timeline_frames_for(frames, source_rate, target.frame_rate)
        clip_mismatches = tuple(Mismatch(kind, detail, n) for kind, detail in diffs)
        clips.append(ClipPlan(info, frames, source_rate, target.frame_rate, start, timeline, clip_mismatches))
        mismatches.extend(clip_mismatches)
        start += timeline
    if first.codec not in SCRUBBABLE_CODECS:
        mismatches.insert(0, Mismatch(JoinDifference.UNSCRUBBABLE_CODEC,
                                      "fast mode copies H.264 and HEVC only (their metadata units can be "
                                      f"removed without decoding); {first.codec} is re-encoded"))
    return JoinPlan(tuple(clips), target, tuple(mismatches))
