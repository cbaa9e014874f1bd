"""Values shared by the renderers: how to redact, how to encode, and what a render promises."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .geometry import Geometry


class Redaction(enum.StrEnum):
    BLACK = "black"   # replace each out-of-body frame with video black
    BLUR = "blur"     # replace it with an unrecognisable blur of itself (colours only)
    CUT = "cut"       # drop it; the output is shorter


#: FFmpeg encoder and default quality per output codec (CRF scales differ between encoders).
ENCODERS = {"h264": ("libx264", 20), "hevc": ("libx265", 24), "av1": ("libsvtav1", 32)}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "h264"
    crf: int | None = None          # None: the codec's default in ENCODERS
    preset: str = "fast"            # x264/x265 preset names; mapped to a number for SVT-AV1
    frame_rate: Fraction | None = None   # None: keep the merged timeline's rate
    height: int | None = None            # None: keep; otherwise scale keeping the aspect ratio

    def __post_init__(self) -> None:
        if self.codec not in ENCODERS:
            raise ValueError(f"codec {self.codec!r} is not supported; choose one of {', '.join(ENCODERS)}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise ValueError(f"crf {self.crf} is out of range (0-51 for h264/hevc, 0-63 for av1)")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {', '.join(X264_PRESETS)}")
        if self.height is not None and self.height < 16:
            raise ValueError(f"height {self.height} is too small (at least 16 pixels)")

    @property
    def encoder(self) -> str:
        return ENCODERS[self.codec][0]

    @property
    def effective_crf(self) -> int:
        return self.crf if self.crf is not None else ENCODERS[self.codec][1]

    def encoder_options(self) -> dict[str, str]:
        crf = str(self.effective_crf)
        if self.codec == "h264":
            return {"crf": crf, "preset": self.preset}
        if self.codec == "hevc":
            return {"crf": crf, "preset": self.preset, "x265-params": "log-level=error:info=0"}
        # SVT-AV1 presets run 0 (slowest) to 13 (fastest); map the x264 names onto that range.
        svt_preset = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8,
                      "medium": 6, "slow": 5, "slower": 4, "veryslow": 2}[self.preset]
        return {"crf": crf, "preset": str(svt_preset)}

    def to_json(self) -> dict[str, object]:
        return {"codec": self.codec, "crf": self.effective_crf, "preset": self.preset,
                "frame_rate": (f"{self.frame_rate.numerator}/{self.frame_rate.denominator}"
                               if self.frame_rate else None),
                "height": self.height}


@dataclass(frozen=True)
class CopiedRun:
    """Output packets ``[first_output, first_output + count)`` (decode order) are the source's packets
    ``[first_packet, first_packet + count)`` copied: the same picture slices, byte for byte, with only
    non-picture NAL units removed (SEI, AUD) and presentation times moved by ``pts_shift`` source ticks.
    With ``frame_order`` (the source's timestamps repeat and were rebuilt), source packet ``n`` is shown
    at ``pts_shift + n`` frame durations instead, in source ticks."""

    source: Path
    stream_index: int
    first_packet: int
    count: int
    first_output: int
    pts_shift: int
    frame_order: bool = False


@dataclass(frozen=True)
class RepeatedRun:
    """Output packets ``[first_output, first_output + count)`` (decode order) repeat output packets
    ``[reference, reference + count)`` byte for byte: a re-encoded group written once more (every wholly
    black group is the first pictures of the case's one black encoding).  Both show their pictures in
    decode order, packet ``p`` at output frame ``p``, so that a verifier which decodes the reference knows
    the repeat's pictures too (see ``verify``: a repeat of a decoded group starting with an IDR picture)."""

    first_output: int
    count: int
    reference: int


@dataclass(frozen=True)
class RenderResult:
    """What a renderer wrote and what the verifier must find in it."""

    method: str                      # "stream-copy" or "re-encode"
    codec: str
    frame_count: int
    frame_rate: Fraction
    width: int
    height: int
    #: Output frame indices that must be video black.
    black_frames: tuple[int, ...] = ()
    #: Output frame index → detail energy of the source frame it replaces (blur check).
    blurred_frames: dict[int, float] = field(default_factory=dict)
    #: Timeline frames dropped (cut redaction).
    cut_frames: int = 0
    notes: tuple[str, ...] = ()
    #: Output frame ranges [start, end) that a "splices" verification must decode: what was re-encoded
    #: and the copied groups on either side of each splice.  None: this render must be decoded in full.
    check_ranges: tuple[tuple[int, int], ...] | None = None
    #: With --keep-audio: samples of the 48 kHz audio track, and the sample ranges that must be silent.
    audio_samples: int | None = None
    audio_silent: tuple[tuple[int, int], ...] = ()
    #: What was stream-copied, for a "changes" verification to prove by packet identity.  None: nothing
    #: was copied (or the renderer does not say), and the output is decoded in full.
    copied_runs: tuple[CopiedRun, ...] | None = None
    #: Re-encoded groups written more than once, for a "changes" verification to decode once and prove
    #: the other instances by packet identity with the decoded one (their frames stay in ``check_ranges``).
    repeated_runs: tuple[RepeatedRun, ...] = ()
    #: Pixel shape, colour description and rotation every decoded frame must show (None: not checked).
    geometry: Geometry | None = None
