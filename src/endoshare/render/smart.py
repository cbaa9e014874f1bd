"""Fast mode: stream-copy every group of pictures that shows no redacted frame, re-encode only the others.

How the spliced track stays one valid H.264 stream:

* The unit of copying is a *closed* group of pictures: it starts at an IDR picture and no picture of it
  is shown before the previous group's last one (open GOPs are merged with their neighbour until the
  union is closed).  A closed group decodes on its own, so copying it reproduces its frames bit for bit.
* A group that shows a redacted frame is decoded, redacted (black, blur, or its redacted frames cut) and
  re-encoded by x264 into a new closed group starting with an IDR picture.  x264 writes its sequence and
  picture parameter sets under an id the source does not use (``sps-id``), and both pairs go into the
  track's one avcC record, so every picture finds its own parameter sets.  The re-encoded pictures carry
  no in-band SPS/PPS/SEI/AUD and use the source's NAL length size.
* x264 runs without B-frames, and its decoding timestamps are shifted back by the source's B-frame delay,
  so decoding timestamps rise strictly across every splice and never pass the presentation timestamps.
* Copied packets pass the SEI scrubber like any copied packet.

Only H.264 in 8-bit 4:2:0 with a whole number of time-base ticks per frame is spliced; anything else
is rendered by the full re-encode (the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import av.error
import numpy as np
from av.video.frame import PictureType

from ..errors import CancelledError, UnreadableMediaError
from ..media.frames import black_frame, blurred_frame, detail_energy
from ..media.join import ClipPlan, JoinPlan
from ..media.nal import (H264_AUD, H264_IDR, H264_PPS, H264_SPS, AvcConfig, h264_sps_id, is_sei,
                         nal_type, split_nal_units, to_length_prefixed)
from ..media.probe import iter_video_packets, open_input
from ..media.scrub import open_output, sei_filter
from ..timeline import SegmentSet
from .common import EncodeSettings, Redaction, RenderResult

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

#: Quality of re-encoded groups: close to transparent, as they sit between copied ones.
SPLICE_CRF = 16


class NotSpliceable(Exception):
    """The plan cannot be smart-rendered; the caller falls back to a full re-encode."""


@dataclass(frozen=True)
class Unit:
    """A closed group of pictures of one clip: packets in decode order, frames in display order."""

    clip: int
    first_packet: int
    packet_count: int
    #: First frame on the merged timeline and number of frames it shows.
    first_frame: int

    @property
    def frame_range(self) -> range:
        return range(self.first_frame, self.first_frame + self.packet_count)


@dataclass(frozen=True)
class SmartPlan:
    units: tuple[Unit, ...]
    dirty: frozenset[int]            # indices into units
    frame_ticks: int                 # ticks of the clips' time base per frame
    time_base: Fraction
    delay_ticks: int                 # how far decoding runs ahead of display (B-frame reordering)
    config: AvcConfig
    #: Presentation timestamp of each clip's first displayed frame.
    clip_origins: tuple[int, ...]
    #: Each clip's presentation timestamps in display order (the i-th packet decodes at the i-th).
    clip_sorted_pts: tuple[np.ndarray, ...]

    @property
    def reencoded_frames(self) -> int:
        return sum(self.units[i].packet_count for i in self.dirty)


def _is_idr(data: bytes, length_size: int) -> bool:
    return any(nal_type(u, "h264") == H264_IDR for u in split_nal_units(data, length_size))


@dataclass(frozen=True)
class _ClipIndex:
    units: list[Unit]
    time_base: Fraction
    #: Presentation timestamps in decode order.
    pts: np.ndarray
    #: How far decoding must run ahead of display (B-frame reordering), in ticks.
    reorder_ticks: int


def _clip_units(clip_number: int, clip: ClipPlan, length_size: int, cancel: Cancel | None) -> _ClipIndex:
    """Closed groups of one clip from one demux pass (no decoding)."""
    with open_input(clip.info.path) as container:
        stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
        time_base = Fraction(stream.time_base)
        starts: list[int] = []
        pts: list[int] = []
        for number, packet in enumerate(iter_video_packets(container, stream)):
            if cancel is not None and number % 256 == 0 and cancel():
                raise CancelledError("Cancelled by the user; nothing was published.")
            if packet.pts is None:
                raise NotSpliceable("packets without timestamps")
            if packet.is_keyframe and _is_idr(bytes(packet), length_size):
                starts.append(number)
            pts.append(packet.pts)
    if not starts or starts[0] != 0:
        raise NotSpliceable("the clip does not start with an IDR picture")
    order = np.asarray(pts, dtype=np.int64)
    # Merge a group into the previous one while any of its pictures is shown before the previous
    # group's last picture (an open GOP): only the union decodes on its own.
    merged: list[int] = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(pts)
        if merged and order[start:end].min() < order[merged[-1]:start].max():
            continue
        merged.append(start)
    units = []
    frame = clip.timeline_start
    for n, start in enumerate(merged):
        end = merged[n + 1] if n + 1 < len(merged) else len(pts)
        units.append(Unit(clip_number, start, end - start, frame))
        frame += end - start
    # Decoding timestamps are rebuilt from the presentation ones (Matroska stores none): the i-th
    # packet decodes at the i-th presentation time, moved back far enough to precede its own display.
    reorder = int(np.max(np.sort(order) - order)) if order.size else 0
    return _ClipIndex(units, time_base, order, max(0, reorder))


def plan_smart(plan: JoinPlan, segments: SegmentSet, cancel: Cancel | None = None) -> SmartPlan:
    if not plan.copy_compatible:
        raise NotSpliceable("; ".join(plan.reasons))
    video = plan.clips[0].info.video
    if plan.codec != "h264":
        raise NotSpliceable(f"splicing is implemented for H.264, not {plan.codec}")
    if video.pix_fmt not in ("yuv420p", "yuvj420p"):
        raise NotSpliceable(f"pixel format {video.pix_fmt} (x264 splices only 8-bit 4:2:0 here)")
    try:
        config = AvcConfig.parse(video.extradata)
    except (ValueError, IndexError):
        raise NotSpliceable("the stream has no avcC record (Annex B source)") from None
    indexes = [_clip_units(number, clip, config.length_size, cancel) for number, clip in enumerate(plan.clips)]
    units = [unit for index in indexes for unit in index.units]
    time_bases = {index.time_base for index in indexes}
    if len(time_bases) != 1:
        raise NotSpliceable("clips differ in time base")
    time_base = time_bases.pop()
    ticks = 1 / (plan.target.frame_rate * time_base)
    if ticks.denominator != 1:
        raise NotSpliceable(f"a frame is not a whole number of time-base ticks ({ticks})")
    dirty = frozenset(n for n, unit in enumerate(units)
                      if any(s.start_frame < unit.frame_range.stop and unit.first_frame < s.end_frame
                             for s in segments))
    # One delay for the whole output keeps decoding timestamps rising across clip boundaries too.
    delay = max(index.reorder_ticks for index in indexes)
    return SmartPlan(tuple(units), dirty, int(ticks), time_base, delay, config,
                     tuple(int(index.pts.min()) for index in indexes),
                     tuple(np.sort(index.pts) for index in indexes))


class _Splicer:
    """Re-encodes one group at a time with x264 under a parameter-set id of its own."""

    def __init__(self, plan: JoinPlan, smart: SmartPlan, settings: EncodeSettings) -> None:
        used = {h264_sps_id(s) for s in smart.config.sps}
        self.sps_id = next(i for i in range(32) if i not in used)
        self.plan, self.smart, self.settings = plan, smart, settings
        self.length_size = smart.config.length_size
        self.parameter_sets: tuple[bytes, bytes] | None = None

    def _encoder(self) -> av.CodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        target = self.plan.target
        encoder.width, encoder.height, encoder.pix_fmt = target.width, target.height, "yuv420p"
        encoder.time_base = 1 / target.frame_rate
        encoder.framerate = target.frame_rate
        encoder.flags |= av.codec.context.Flags.global_header
        crf = self.settings.crf if self.settings.crf is not None else SPLICE_CRF
        encoder.options = {"crf": str(crf), "preset": self.settings.preset,
                           "x264-params": f"sps-id={self.sps_id}:bframes=0:scenecut=0:keyint=infinite"}
        encoder.open()
        units = list(split_nal_units(bytes(encoder.extradata or b""), None))
        sps = next(u for u in units if nal_type(u, "h264") == H264_SPS)
        pps = next(u for u in units if nal_type(u, "h264") == H264_PPS)
        if self.parameter_sets is None:
            self.parameter_sets = (sps, pps)
        elif self.parameter_sets != (sps, pps):
            raise NotSpliceable("x264 changed its parameter sets between groups")
        return encoder

    def avcc(self) -> bytes:
        if self.parameter_sets is None:
            self._encoder()
        assert self.parameter_sets is not None
        return self.smart.config.with_parameter_sets(*self.parameter_sets).serialize()

    def encode(self, frames: list[av.VideoFrame]) -> Iterator[tuple[bytes, bool]]:
        """(length-prefixed picture, is keyframe) per frame, in order (no B-frames)."""
        encoder = self._encoder()
        packets: list[av.Packet] = []
        for n, frame in enumerate(frames):
            frame.pts = n
            frame.time_base = encoder.time_base
            frame.pict_type = PictureType.I if n == 0 else PictureType.NONE
            packets.extend(encoder.encode(frame))
        packets.extend(encoder.encode(None))
        if len(packets) != len(frames):
            raise NotSpliceable(f"x264 returned {len(packets)} pictures for {len(frames)} frames")
        for packet in packets:
            data = bytes(packet)
            framing = None if data[:3] == b"\0\0\1" or data[:4] == b"\0\0\0\1" else 4
            units = [u for u in split_nal_units(data, framing)
                     if not is_sei(u, "h264") and nal_type(u, "h264") not in (H264_SPS, H264_PPS, H264_AUD)]
            yield to_length_prefixed(units, self.length_size), packet.is_keyframe


def render_smart(plan: JoinPlan, segments: SegmentSet, redaction: Redaction, settings: EncodeSettings,
                 out_path: Path, progress: Progress | None = None, cancel: Cancel | None = None) -> RenderResult:
    """Raises :class:`NotSpliceable` before writing anything when the case cannot be spliced."""
    smart = plan_smart(plan, segments, cancel)
    total = plan.total_frames
    redacted = segments.clipped(total).mask(total)
    splicer = _Splicer(plan, smart, settings)
    avcc = splicer.avcc()
    cut_before = np.concatenate(([0], np.cumsum(redacted))) if redaction is Redaction.CUT else None
    ticks, delay = smart.frame_ticks, smart.delay_ticks
    black: list[int] = []
    blurred: dict[int, float] = {}
    written = 0

    def out_index(frame: int) -> int:
        return frame - int(cut_before[frame]) if cut_before is not None else frame

    inputs = [open_input(c.info.path) for c in plan.clips]
    out = open_output(out_path)
    try:
        template = next(s for s in inputs[0].streams.video if s.index == plan.clips[0].info.video.index)
        out_stream = out.add_stream_from_template(template)
        out_stream.metadata.clear()
        out_stream.codec_tag = "avc1"
        out_stream.codec_context.extradata = avcc
        scrubber = sei_filter("h264", template, None)
        out.start_encoding()

        def mux(packet: av.Packet) -> None:
            packet.stream = out_stream
            packet.time_base = smart.time_base
            out.mux(packet)

        units_by_clip: dict[int, list[tuple[int, Unit]]] = {}
        for number, unit in enumerate(smart.units):
            units_by_clip.setdefault(unit.clip, []).append((number, unit))
        for clip_number, (clip, container) in enumerate(zip(plan.clips, inputs)):
            stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
            pending = iter(units_by_clip[clip_number])
            number, unit = next(pending)
            buffered: list[av.Packet] = []
            for packet_number, packet in enumerate(iter_video_packets(container, stream)):
                if cancel is not None and cancel():
                    raise CancelledError("Cancelled by the user; nothing was published.")
                if packet_number >= unit.first_packet + unit.packet_count:
                    written += _finish_unit(unit, number, buffered, smart, splicer, clip, redacted, redaction,
                                            out_index, black, blurred, mux)
                    buffered = []
                    number, unit = next(pending)
                if number in smart.dirty:
                    buffered.append(packet)
                else:
                    # Rebase: the clip's first displayed frame lands on its place in the output.
                    shift = out_index(unit.first_frame) * ticks - _display_origin(clip, unit, smart)
                    packet.pts += shift
                    packet.dts = int(smart.clip_sorted_pts[clip_number][packet_number]) - delay + shift
                    packet.time_base = smart.time_base
                    for clean in scrubber.filter(packet):
                        mux(clean)
                    written += 1
                if progress is not None:
                    progress(min(total, unit.first_frame + 1), total)
            written += _finish_unit(unit, number, buffered, smart, splicer, clip, redacted, redaction,
                                    out_index, black, blurred, mux)
        for clean in scrubber.filter(None):
            mux(clean)
    except av.error.FFmpegError as exc:
        raise UnreadableMediaError(f"Fast rendering failed ({exc}); run again with --mode advanced.",
                                   path=plan.clips[0].info.path) from None
    finally:
        out.close()
        for container in inputs:
            container.close()
    cut = int(sum(redacted)) if redaction is Redaction.CUT else 0
    return RenderResult(
        check_ranges=_splice_ranges(smart, out_index),
        method="smart-render", codec="h264", frame_count=written, frame_rate=plan.target.frame_rate,
        width=plan.target.width, height=plan.target.height, black_frames=tuple(black), blurred_frames=blurred,
        cut_frames=cut,
        notes=(f"{len(smart.dirty)} of {len(smart.units)} groups of pictures re-encoded "
               f"({smart.reencoded_frames} of {total} frames); the rest stream-copied",))


def _splice_ranges(smart: SmartPlan, out_index: Callable[[int], int]) -> tuple[tuple[int, int], ...]:
    """Output frames of every re-encoded group and of the groups on either side of each splice
    (re-encoded/copied and clip/clip), merged: what a "splices" verification decodes."""
    units = smart.units
    marked: set[int] = set()
    for n in range(len(units)):
        if n in smart.dirty or (n > 0 and units[n - 1].clip != units[n].clip):
            marked.update(m for m in (n - 1, n, n + 1) if 0 <= m < len(units))
    ranges: list[tuple[int, int]] = []
    for n in sorted(marked):
        unit = units[n]
        start, end = out_index(unit.first_frame), out_index(unit.first_frame + unit.packet_count)
        if end <= start:
            continue
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        else:
            ranges.append((start, end))
    return tuple(ranges)


def _display_origin(clip: ClipPlan, unit: Unit, smart: SmartPlan) -> int:
    """Presentation timestamp, in the clip's own ticks, of the unit's first displayed frame."""
    return smart.clip_origins[unit.clip] + (unit.first_frame - clip.timeline_start) * smart.frame_ticks


def _finish_unit(unit: Unit, number: int, packets: list[av.Packet], smart: SmartPlan, splicer: _Splicer,
                 clip: ClipPlan, redacted: list[bool], redaction: Redaction, out_index: Callable[[int], int],
                 black: list[int], blurred: dict[int, float], mux: Callable[[av.Packet], None]) -> int:
    """Re-encode a dirty unit from its buffered packets; returns the pictures written."""
    if number not in smart.dirty:
        return 0
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = smart.config.serialize()
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames.extend(decoder.decode(packet))
    frames.extend(decoder.decode(None))
    if len(frames) != unit.packet_count:
        raise UnreadableMediaError(f"{clip.info.path}: a group of pictures decoded to {len(frames)} frames "
                                   f"instead of {unit.packet_count}; run again with --mode advanced.",
                                   path=clip.info.path)
    fmt = splicer.plan.target
    kept: list[av.VideoFrame] = []
    for offset, frame in enumerate(frames):
        index = unit.first_frame + offset
        frame = frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
        if redacted[index]:
            if redaction is Redaction.CUT:
                continue
            if redaction is Redaction.BLACK:
                frame = black_frame(fmt)
                black.append(out_index(index))
            else:
                blurred[out_index(index)] = detail_energy(frame)
                frame = blurred_frame(frame, fmt)
        kept.append(frame)
    if not kept:
        return 0
    first_out = out_index(next(unit.first_frame + o for o in range(unit.packet_count)
                               if not (redaction is Redaction.CUT and redacted[unit.first_frame + o])))
    for n, (data, keyframe) in enumerate(splicer.encode(kept)):
        packet = av.Packet(data)
        packet.pts = (first_out + n) * smart.frame_ticks
        packet.dts = packet.pts - smart.delay_ticks
        packet.is_keyframe = keyframe
        mux(packet)
    return len(kept)
