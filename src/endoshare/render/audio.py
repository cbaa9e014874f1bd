"""The optional audio track (``--keep-audio``): merged, muted or cut with the video, re-encoded to AAC.

Audio is never copied: OR audio carries names, so it is decoded, resampled to 48 kHz stereo, laid on the
merged timeline (each clip's audio starts with its first video frame and is padded with silence or
trimmed to the clip's video length), silenced where the video is blacked out or blurred, dropped where
the video is cut, and encoded again.  It is added to the rendered video by a remux (video copied as is).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.audio.fifo
import numpy as np

from ..media.join import ClipPlan, JoinPlan
from ..media.probe import iter_video_packets, open_input, stream_time_base
from ..media.scrub import open_output
from ..timeline import SegmentSet
from ..types import Cancel, check_cancelled
from .common import Redaction

AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"
AUDIO_BITRATE = 128_000


@dataclass(frozen=True)
class AudioResult:
    samples: int
    #: Output sample ranges [start, end) that must be silent.
    silent: tuple[tuple[int, int], ...]
    clips_without_audio: int


def sample_at(frame: int, frame_rate: Fraction) -> int:
    """First audio sample of video frame ``frame`` on the merged timeline."""
    return int(Fraction(frame) * AUDIO_RATE / frame_rate)


def has_audio(plan: JoinPlan) -> bool:
    return any(s.kind == "audio" for clip in plan.clips for s in clip.info.streams)


def _clip_samples(clip: ClipPlan, needed: int, cancel: Cancel | None) -> Iterator[np.ndarray]:
    """Exactly ``needed`` samples (2, n) of the clip's first audio stream, aligned to its first video frame."""
    audio = next((s for s in clip.info.streams if s.kind == "audio"), None)
    produced = 0
    if audio is not None:
        with open_input(clip.info.path) as container:
            stream = next(s for s in container.streams.audio if s.index == audio.index)
            video = next(s for s in container.streams.video if s.index == clip.info.video.index)
            # Audio that starts after the first video frame is preceded by silence; earlier audio is dropped.
            video_start = float((video.start_time or 0) * stream_time_base(video, clip.info.path))
            audio_start = float((stream.start_time or 0) * stream_time_base(stream, clip.info.path))
            skip = int(round((video_start - audio_start) * AUDIO_RATE))
            if skip < 0:
                pad = min(-skip, needed)
                yield np.zeros((2, pad), np.float32)
                produced += pad
                skip = 0
            resampler = av.AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
            for frame in container.decode(stream):
                check_cancelled(cancel)
                for out in resampler.resample(frame):
                    block = out.to_ndarray().astype(np.float32, copy=False)
                    if skip:
                        drop = min(skip, block.shape[1])
                        block, skip = block[:, drop:], skip - drop
                    block = block[:, :needed - produced]
                    if block.shape[1]:
                        yield block
                        produced += block.shape[1]
                if produced >= needed:
                    break
    while produced < needed:
        pad = min(needed - produced, AUDIO_RATE)
        yield np.zeros((2, pad), np.float32)
        produced += pad


def timeline_audio(plan: JoinPlan, segments: SegmentSet,
                   cancel: Cancel | None = None) -> Iterator[tuple[np.ndarray, bool]]:
    """(block, redacted) pieces of the merged timeline's audio, in order; redacted pieces are silent."""
    rate = plan.target.frame_rate
    spans = [(sample_at(s.start_frame, rate), sample_at(s.end_frame, rate)) for s in segments]
    cursor = 0
    for clip in plan.clips:
        start = sample_at(clip.timeline_start, rate)
        needed = sample_at(clip.timeline_start + clip.timeline_frames, rate) - start
        for block in _clip_samples(clip, needed, cancel):
            end = cursor + block.shape[1]
            # Split the block at span edges so that every piece is wholly inside or outside a span.
            edges = sorted({cursor, end, *(e for span in spans for e in span if cursor < e < end)})
            for a, b in itertools.pairwise(edges):
                inside = any(s <= a and b <= e for s, e in spans)
                piece = block[:, a - cursor:b - cursor]
                yield (np.zeros_like(piece) if inside else piece), inside
            cursor = end


def add_audio(video_path: Path, plan: JoinPlan, segments: SegmentSet, redaction: Redaction, out_path: Path,
              cancel: Cancel | None = None) -> AudioResult:
    """Copy the rendered video from ``video_path`` and add the timeline's audio, into ``out_path``."""
    silent: list[tuple[int, int]] = []
    written = 0
    with open_input(video_path) as source:
        out = open_output(out_path)
        try:
            video_in = source.streams.video[0]
            video_out = out.add_stream_from_template(video_in)
            video_out.metadata.clear()
            audio_out = out.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT)
            audio_out.bit_rate = AUDIO_BITRATE
            # Without bit-exact, FFmpeg's AAC encoder writes its name and version into the bitstream.
            audio_out.codec_context.flags |= av.codec.context.Flags.bitexact
            out.start_encoding()
            for packet in iter_video_packets(source, video_in):
                packet.stream = video_out
                out.mux(packet)
            fifo = av.audio.fifo.AudioFifo()
            for block, redacted in timeline_audio(plan, segments, cancel):
                if redacted and redaction is Redaction.CUT:
                    continue
                if redacted:
                    if silent and silent[-1][1] == written:
                        silent[-1] = (silent[-1][0], written + block.shape[1])
                    else:
                        silent.append((written, written + block.shape[1]))
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=AUDIO_LAYOUT)
                frame.sample_rate = AUDIO_RATE
                frame.pts = written
                frame.time_base = Fraction(1, AUDIO_RATE)
                written += block.shape[1]
                fifo.write(frame)
                for chunk in fifo.read_many(audio_out.codec_context.frame_size or 1024):
                    for packet in audio_out.encode(chunk):
                        out.mux(packet)
            rest = fifo.read()
            if rest is not None:
                for packet in audio_out.encode(rest):
                    out.mux(packet)
            for packet in audio_out.encode(None):
                out.mux(packet)
        finally:
            out.close()
    clips_without = sum(1 for clip in plan.clips if not any(s.kind == "audio" for s in clip.info.streams))
    return AudioResult(written, tuple(silent), clips_without)
