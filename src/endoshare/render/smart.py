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
* Copied packets pass the bitstream scrubber (NAL unit allow-list) like any copied packet, re-encoded
  pictures keep only their allowed NAL units, and the avcC/hvcC holds parameter sets only.

* Annex B sources (MPEG-TS, AVCHD .mts/.m2ts): the in-band SPS/PPS, or VPS/SPS/PPS (which must not
  change within the case), go into an avcC/hvcC record built for the output, and every copied picture is
  converted to 4-byte length-prefixed NAL units without its access unit delimiter and parameter sets.
* Repeated or missing presentation timestamps are rebuilt from frame order when no picture is reordered
  (decode order is then display order); with reordered pictures the case is re-encoded instead.
* A partly redacted group copies its unchanged start when that is a closed decode-order prefix, and is
  re-encoded from its first changed frame, as closed groups of black (shared) and in-body runs.

Only H.264 and HEVC in 8-bit 4:2:0 with a whole number of time-base ticks
per frame are spliced; anything else is rendered by the full re-encode (the report says so).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.frame import PictureType

from ..errors import UnreadableMediaError
from ..media.join import ClipPlan, JoinPlan
from ..media.nal import (
    H264_IDR,
    H264_PPS,
    H264_SPS,
    HEVC_IDR_TYPES,
    HEVC_PPS,
    HEVC_SPS,
    HEVC_VPS,
    RECORD_TYPES,
    AvcConfig,
    allowed_unit,
    clean_avcc,
    clean_hvcc,
    h264_idr_pic_id,
    h264_slice_syntaxes,
    h264_slice_type,
    h264_sps_id,
    hvcc_for_inband_track,
    hvcc_parameter_sets,
    nal_length_size,
    nal_type,
    read_ue,
    scrub_access_unit,
    split_nal_units,
    to_length_prefixed,
    unit_allowed,
)
from ..media.probe import iter_video_packets, open_input, stream_time_base
from ..media.scrub import open_output, video_codec
from ..overlay.regions import OverlaySet
from ..timeline import SegmentSet
from ..types import Cancel, Progress, check_cancelled
from .common import X264_PRESETS, CopiedRun, EncodeSettings, Redaction, RenderResult, RepeatedRun
from .geometry import Geometry, apply_geometry, read_geometry, scan_black_picture
from .redact import Redactor

#: Quality of re-encoded groups: close to transparent, as they sit between copied ones (x265, and x264
#: before the preset below; see X264_SPLICE_CRF).
SPLICE_CRF = 16
#: Re-encoded groups use at most this slow a preset: at CRF 16 a slower one buys little for groups that
#: mostly show black or blurred frames, and the re-encode is most of fast mode's render time.
SPLICE_SLOWEST_PRESET = "veryfast"
#: x264 re-encodes spliced groups with ``ultrafast`` at CRF 17: measured on 40-frame 1080p groups of two
#: generated cases against their decoded source, the PSNR of ``veryfast`` at CRF 16 (49.40 against 49.45 dB,
#: 49.11 against 48.96 dB) for 0.42 against 1.51 s and 0.49 against 1.80 s of CPU, in 1.7-1.8x the bytes
#: (no CABAC, deblocking or psychovisual tuning; at this quality none is visible).
X264_SPLICE_PRESET = "ultrafast"
X264_SPLICE_CRF = 17
#: ... but only while at most this share of a case's groups is re-encoded.  When most are (burned-in text
#: masked throughout a case) the output is mostly re-encoded pictures and its size comes first: then
#: :data:`SPLICE_SLOWEST_PRESET` at :data:`SPLICE_CRF`.
X264_SPLICE_FAST_SHARE = 0.5


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
    codec: str                       # h264 or hevc
    #: The output track's avcC/hvcC record before splicing (the source's, or built from an Annex B
    #: source's parameter sets) and its NAL length size.
    extradata: bytes
    length_size: int
    #: Presentation timestamp of each clip's first displayed frame.
    clip_origins: tuple[int, ...]
    #: Each clip's presentation timestamps in display order (the i-th packet decodes at the i-th).
    clip_sorted_pts: tuple[np.ndarray, ...]
    #: Each clip's presentation timestamps in decode order (rebuilt from frame order where the source's
    #: repeat: see ``rebuilt_clips``).
    clip_pts: tuple[np.ndarray, ...] = ()
    #: NAL length size of the source packets; None for Annex B (MPEG-TS, raw .h264) sources, whose
    #: packets are converted to length-prefixed NAL units with their in-band parameter sets moved to
    #: the record.
    source_length_size: int | None = 4
    #: Parameter sets to give the decoder of a re-encoded group (Annex B), for Annex B sources.
    decoder_extradata: bytes = b""
    #: Clips whose presentation timestamps were rebuilt from frame order.
    rebuilt_clips: frozenset[int] = frozenset()
    #: For each dirty unit, how many of its first packets (decode order) are copied: a decode-order prefix
    #: that shows exactly the unit's first frames, all of them unchanged (see :func:`_copyable_prefix`).
    prefixes: tuple[int, ...] = ()

    @property
    def reencoded_frames(self) -> int:
        return sum(self.units[i].packet_count - self.prefix(i) for i in self.dirty)

    def prefix(self, unit: int) -> int:
        """Packets copied at the start of a dirty unit (0 for a plan made without them)."""
        return self.prefixes[unit] if unit < len(self.prefixes) else 0


def _is_idr(data: bytes, length_size: int | None, codec: str) -> bool:
    """An IDR picture starts a coded video sequence that refers to nothing before it (a CRA may not:
    its leading pictures can, so a group that starts with one is merged with the previous group)."""
    idr = (H264_IDR,) if codec == "h264" else HEVC_IDR_TYPES
    return any(nal_type(u, codec) in idr for u in split_nal_units(data, length_size))


@dataclass(frozen=True)
class _ClipIndex:
    units: list[Unit]
    time_base: Fraction
    #: Presentation timestamps in decode order.
    pts: np.ndarray
    #: How far decoding must run ahead of display (B-frame reordering), in ticks.
    reorder_ticks: int
    #: In-band parameter sets of an Annex B source, by (NAL type, id).
    parameter_sets: dict[tuple[int, int], bytes]
    #: True when the source's timestamps repeated and were rebuilt from frame order.
    rebuilt: bool


def _parameter_set_key(unit: bytes, codec: str) -> tuple[int, int]:
    """(NAL type, id) of an in-band parameter set.  HEVC ids are taken as 0: a stream with two different
    VPS, SPS or PPS then counts as changing them, and is not spliced."""
    kind = nal_type(unit, codec)
    if codec != "h264":
        return kind, 0
    rbsp = unit.replace(b"\0\0\3", b"\0\0")
    return kind, read_ue(rbsp, 32 if kind == H264_SPS else 8)[0]


def _clip_units(clip_number: int, clip: ClipPlan, length_size: int | None, codec: str, frame_rate: Fraction,
                cancel: Cancel | None) -> _ClipIndex:
    """Closed groups of one clip from one demux pass (no decoding)."""
    parameter_sets: dict[tuple[int, int], bytes] = {}
    with open_input(clip.info.path) as container:
        stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
        time_base = stream_time_base(stream, clip.info.path)
        # The stream's own word (SPS) that no picture is shown before one decoded earlier.
        reorders = bool(stream.codec_context.has_b_frames)
        starts: list[int] = []
        pts: list[int | None] = []
        for number, packet in enumerate(iter_video_packets(container, stream)):
            if number % 256 == 0:
                check_cancelled(cancel)
            data = bytes(packet)
            # A B slice may be shown before a picture decoded earlier, whatever the SPS says.
            reorders = reorders or (codec == "h264" and _has_b_slice(data, length_size))
            if length_size is None:
                for unit in split_nal_units(data, None):
                    if nal_type(unit, codec) in RECORD_TYPES[codec]:
                        key = _parameter_set_key(unit, codec)
                        if parameter_sets.setdefault(key, unit) != unit:
                            raise NotSpliceable("the stream changes its parameter sets mid-stream")
            if packet.is_keyframe and _is_idr(data, length_size, codec):
                starts.append(number)
            pts.append(packet.pts)
    if not starts or starts[0] != 0:
        raise NotSpliceable("the clip does not start with an IDR picture")
    known = np.asarray([t for t in pts if t is not None], dtype=np.int64)
    missing = len(known) != len(pts)
    rebuilt = False
    if missing or np.unique(known).size != known.size:
        # Missing or repeated timestamps (a recorder's coarse clock, a TS remuxed without care, PES packets
        # without a PTS): rebuilt from frame order, which is display order only when no picture is shown
        # before one decoded earlier: the stream must say so (no reordering delay in its SPS), carry no
        # B slice (H.264), and the timestamps it has must never go back.
        ticks = 1 / (frame_rate * time_base)
        what = "are missing" if missing else "repeat"
        if reorders or np.any(np.diff(known) < 0) or ticks.denominator != 1:
            raise NotSpliceable(f"timestamps {what} in a stream with reordered pictures")
        first = next(((t, n) for n, t in enumerate(pts) if t is not None), (0, 0))
        order = first[0] - first[1] * int(ticks) + np.arange(len(pts), dtype=np.int64) * int(ticks)
        # The timestamps the stream has must be the ones frame order gives them.
        given = np.asarray([t is not None for t in pts])
        if missing and np.any(order[given] != known) and np.unique(known).size == known.size:
            raise NotSpliceable("some timestamps are missing and the others are not one frame apart")
        rebuilt = True
    else:
        order = known
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
    return _ClipIndex(units, time_base, order, max(0, reorder), parameter_sets, rebuilt)


def _has_b_slice(data: bytes, length_size: int | None) -> bool:
    """True when an H.264 picture has a B slice (slice_type 1 or 6)."""
    for unit in split_nal_units(data, length_size):
        if unit and nal_type(unit, "h264") in (1, 5):
            try:
                return h264_slice_type(unit) % 5 == 1
            except (ValueError, IndexError):
                return True                  # unreadable: take it for one
    return False


def _annexb_record(parameter_sets: dict[tuple[int, int], bytes]) -> bytes:
    """An avcC record (4-byte NAL lengths) listing an Annex B stream's SPS and PPS."""
    sps = tuple(unit for key, unit in sorted(parameter_sets.items()) if key[0] == H264_SPS)
    pps = tuple(unit for key, unit in sorted(parameter_sets.items()) if key[0] == H264_PPS)
    if not sps or not pps:
        raise NotSpliceable("the Annex B stream carries no SPS/PPS")
    first = sps[0]
    # clean_avcc keeps only allowed SPS/PPS units and writes the profile's chroma/bit-depth fields.
    return clean_avcc(AvcConfig(first[1], first[2], first[3], 4, sps, pps, b"").serialize())


def _annexb_hvcc(parameter_sets: dict[tuple[int, int], bytes]) -> bytes:
    """An hvcC record (4-byte NAL lengths, 8-bit 4:2:0 as the planner requires) listing an Annex B HEVC
    stream's VPS, SPS and PPS; clean_hvcc copies the profile, tier and level from the SPS."""
    arrays = []
    for kind in (HEVC_VPS, HEVC_SPS, HEVC_PPS):
        units = [unit for key, unit in sorted(parameter_sets.items()) if key[0] == kind]
        if not units:
            raise NotSpliceable("the Annex B HEVC stream lacks a VPS, SPS or PPS")
        arrays.append(bytes([kind]) + len(units).to_bytes(2, "big")
                      + b"".join(len(u).to_bytes(2, "big") + u for u in units))
    header = bytearray(22)
    header[0] = 1                                    # configurationVersion
    header[16] = 0xFC | 1                            # chroma_format_idc 4:2:0
    header[17], header[18] = 0xF8, 0xF8              # bit depths minus 8: 0
    header[21] = 3                                   # lengthSizeMinusOne
    return clean_hvcc(bytes(header) + bytes([len(arrays)]) + b"".join(arrays))


def plan_smart(plan: JoinPlan, segments: SegmentSet, cancel: Cancel | None = None) -> SmartPlan:
    if not plan.copy_compatible:
        raise NotSpliceable("; ".join(plan.reasons))
    video = plan.clips[0].info.video
    if plan.codec not in ("h264", "hevc"):
        raise NotSpliceable(f"splicing is implemented for H.264 and HEVC, not {plan.codec}")
    if video.pix_fmt not in ("yuv420p", "yuvj420p"):
        raise NotSpliceable(f"pixel format {video.pix_fmt} (only 8-bit 4:2:0 is spliced)")
    source_length_size = nal_length_size(video.extradata, plan.codec)
    indexes = [_clip_units(number, clip, source_length_size, plan.codec, plan.target.frame_rate, cancel)
               for number, clip in enumerate(plan.clips)]
    extradata, length_size, decoder_extradata = video.extradata, source_length_size or 4, b""
    if source_length_size is None:
        parameter_sets: dict[tuple[int, int], bytes] = {}
        for nal in split_nal_units(video.extradata, None):
            if nal_type(nal, plan.codec) in RECORD_TYPES[plan.codec]:
                parameter_sets[_parameter_set_key(nal, plan.codec)] = nal
        for index in indexes:
            for key, nal in index.parameter_sets.items():
                if parameter_sets.setdefault(key, nal) != nal:
                    raise NotSpliceable("the clips' parameter sets differ")
        extradata = (_annexb_record if plan.codec == "h264" else _annexb_hvcc)(parameter_sets)
        decoder_extradata = b"".join(b"\0\0\0\1" + nal for nal in parameter_sets.values())
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
    changed = segments.clipped(plan.total_frames).mask(plan.total_frames)
    prefixes = [0] * len(units)
    for n in dirty:
        unit = units[n]
        unchanged = next((i for i in range(unit.packet_count) if changed[unit.first_frame + i]), unit.packet_count)
        pts = indexes[unit.clip].pts[unit.first_packet:unit.first_packet + unit.packet_count]
        prefixes[n] = _copyable_prefix(pts, unchanged)
    # One delay for the whole output keeps decoding timestamps rising across clip boundaries too.
    delay = max(index.reorder_ticks for index in indexes)
    return SmartPlan(tuple(units), dirty, int(ticks), time_base, delay, plan.codec, extradata, length_size,
                     tuple(int(index.pts.min()) for index in indexes),
                     tuple(np.sort(index.pts) for index in indexes),
                     clip_pts=tuple(index.pts for index in indexes), source_length_size=source_length_size,
                     decoder_extradata=decoder_extradata,
                     rebuilt_clips=frozenset(n for n, index in enumerate(indexes) if index.rebuilt),
                     prefixes=tuple(prefixes))


#: A copied prefix is at least this long: copying a lone IDR picture saves one frame and costs a second
#: IDR picture right after it.
MIN_PREFIX = 2


def _copyable_prefix(pts: np.ndarray, unchanged: int) -> int:
    """How many of a closed group's first packets (decode order, presentation times ``pts``) can be
    copied when only its first ``unchanged`` frames (display order) are shown unchanged.

    The first ``m`` packets decode on their own (the group starts with an IDR picture and a picture only
    refers to pictures decoded before it), so copying them reproduces their pictures bit for bit; they may
    be copied when they are exactly the pictures shown first, i.e. their presentation times are the ``m``
    smallest of the group: then no picture of the prefix is shown after one that is re-encoded, and none
    of the re-encoded ones (a new closed group from an IDR picture) refers back into the prefix.  This
    reads the reordering from the timestamps themselves, so B-frames (or a stream that says it has none
    yet reorders) only shorten the prefix; it never assumes decode order is display order."""
    if unchanged <= 0:
        return 0
    ranks = np.argsort(np.argsort(pts, kind="stable"), kind="stable")
    highest = np.maximum.accumulate(ranks[:unchanged])
    closed = np.flatnonzero(highest == np.arange(highest.size))     # prefix of m = i + 1 packets is closed
    best = int(closed[-1]) + 1 if closed.size else 0
    return best if best >= MIN_PREFIX else 0


class _Splicer:
    """Re-encodes one group at a time into pictures that can sit in the source's track."""

    encoder_name = ""
    codec = ""

    def __init__(self, plan: JoinPlan, smart: SmartPlan, settings: EncodeSettings, geometry: Geometry | None) -> None:
        self.plan, self.smart, self.settings, self.geometry = plan, smart, settings, geometry
        self.length_size = smart.length_size
        self.parameter_sets: tuple[bytes, ...] | None = None
        self.preset = min(settings.preset, SPLICE_SLOWEST_PRESET, key=X264_PRESETS.index)
        self.crf = SPLICE_CRF

    def encoder_options(self, crf: int) -> dict[str, str]:
        raise NotImplementedError

    def parameter_set_types(self) -> tuple[int, ...]:
        raise NotImplementedError

    def track_extradata(self) -> bytes:
        """The avcC/hvcC record of the output track."""
        raise NotImplementedError

    def prefix_reencoded(self) -> bytes:
        """Length-prefixed NAL units to put before the first picture of a re-encoded group."""
        return b""

    def prefix_after_reencoded(self) -> bytes:
        """Length-prefixed NAL units to put before the first copied picture after a re-encoded group."""
        return b""

    def _encoder(self) -> av.VideoCodecContext:
        encoder = video_codec(self.encoder_name, "w")
        target = self.plan.target
        encoder.width, encoder.height, encoder.pix_fmt = target.width, target.height, "yuv420p"
        encoder.time_base = 1 / target.frame_rate
        encoder.framerate = target.frame_rate
        encoder.flags |= av.codec.context.Flags.global_header
        # The source's pixel shape, colour description and scan, in the re-encoded SPS's VUI.
        apply_geometry(encoder, self.geometry, self.codec)
        encoder.options = self.encoder_options(self.settings.crf if self.settings.crf is not None else self.crf)
        encoder.open()
        units = [u for u in split_nal_units(bytes(encoder.extradata or b""), None)
                 if unit_allowed(u, self.codec, frozenset(self.parameter_set_types()))]
        if self.parameter_sets is None:
            self.parameter_sets = tuple(units)
        elif self.parameter_sets != tuple(units):
            raise NotSpliceable("the encoder changed its parameter sets between groups")
        return encoder

    def _encoder_parameter_sets(self) -> tuple[bytes, ...]:
        if self.parameter_sets is None:
            self._encoder()
        assert self.parameter_sets is not None
        return self.parameter_sets

    def encode(self, frames: list[av.VideoFrame], idr_pic_id: int = 0) -> Iterator[tuple[bytes, bool]]:
        """(length-prefixed picture, is keyframe) per frame, in order (no B-frames).  ``idr_pic_id`` (H.264):
        x264 numbers the IDR pictures of one encoder 0, 1, 0, 1…, so for 1 one throwaway IDR picture (the
        first frame once more) is encoded first and dropped; the caller checks the number it got."""
        encoder = self._encoder()
        lead = [frames[0]] * idr_pic_id
        packets: list[av.Packet] = []
        for n, frame in enumerate((*lead, *frames)):
            frame.pts = n
            frame.time_base = encoder.time_base
            frame.pict_type = PictureType.I if n <= len(lead) else PictureType.NONE
            packets.extend(encoder.encode(frame))
        packets.extend(encoder.encode(None))
        if len(packets) != len(lead) + len(frames):
            raise NotSpliceable(f"{self.encoder_name} returned {len(packets)} pictures for {len(frames)} frames")
        packets = packets[len(lead):]
        # Parameter sets travel in the track's record (H.264) or before the group (HEVC), not in pictures.
        dropped = self.parameter_set_types()
        for packet in packets:
            data = bytes(packet)
            framing = None if data[:3] == b"\0\0\1" or data[:4] == b"\0\0\0\1" else 4
            units = [u for u in split_nal_units(data, framing)
                     if allowed_unit(u, self.codec) == u and nal_type(u, self.codec) not in dropped]
            yield to_length_prefixed(units, self.length_size), packet.is_keyframe


class _H264Splicer(_Splicer):
    """x264 writes its SPS/PPS under an id the source does not use; both pairs go into one avcC."""

    encoder_name, codec = "libx264", "h264"

    def __init__(self, plan: JoinPlan, smart: SmartPlan, settings: EncodeSettings, geometry: Geometry | None) -> None:
        super().__init__(plan, smart, settings, geometry)
        self.config = AvcConfig.parse(clean_avcc(smart.extradata))
        used = {h264_sps_id(s) for s in self.config.sps}
        self.sps_id = next(i for i in range(32) if i not in used)
        if len(smart.dirty) <= X264_SPLICE_FAST_SHARE * len(smart.units):
            self.preset, self.crf = X264_SPLICE_PRESET, X264_SPLICE_CRF

    def encoder_options(self, crf: int) -> dict[str, str]:
        return {"crf": str(crf), "preset": self.preset,
                "x264-params": f"sps-id={self.sps_id}:bframes=0:scenecut=0:keyint=infinite"}

    def parameter_set_types(self) -> tuple[int, ...]:
        return (H264_SPS, H264_PPS)

    def track_extradata(self) -> bytes:
        sps, pps = self._encoder_parameter_sets()
        return self.config.with_parameter_sets(sps, pps).serialize()


class _HevcSplicer(_Splicer):
    """x265 has no parameter-set id option, so the parameter sets travel in-band ('hev1' track): x265's
    before each re-encoded group, the source's again before the copied group that follows it."""

    encoder_name, codec = "libx265", "hevc"

    def encoder_options(self, crf: int) -> dict[str, str]:
        return {"crf": str(crf), "preset": self.preset,
                "x265-params": "log-level=error:info=0:bframes=0:scenecut=0:open-gop=0:keyint=-1:repeat-headers=0"}

    def parameter_set_types(self) -> tuple[int, ...]:
        return (HEVC_VPS, HEVC_SPS, HEVC_PPS)

    def track_extradata(self) -> bytes:
        self._encoder_parameter_sets()
        return hvcc_for_inband_track(self.smart.extradata)

    def prefix_reencoded(self) -> bytes:
        return to_length_prefixed(list(self._encoder_parameter_sets()), self.length_size)

    def prefix_after_reencoded(self) -> bytes:
        return to_length_prefixed(list(hvcc_parameter_sets(self.smart.extradata)), self.length_size)


def render_smart(plan: JoinPlan, segments: SegmentSet, redaction: Redaction, settings: EncodeSettings,
                 out_path: Path, progress: Progress | None = None, cancel: Cancel | None = None,
                 overlays: OverlaySet | None = None) -> RenderResult:
    """Raises :class:`NotSpliceable` before writing anything when the case cannot be spliced.

    Every group that shows a frame with a burned-in text region to mask is re-encoded too: the text
    is in the coded picture itself, so no copied packet may carry it."""
    masked = overlays.frames() if overlays else SegmentSet()
    smart = plan_smart(plan, SegmentSet.of((*segments.segments, *masked.segments)), cancel)
    total = plan.total_frames
    redacted = segments.clipped(total).mask(total)
    geometry = read_geometry(plan)
    splicer = (_H264Splicer if smart.codec == "h264" else _HevcSplicer)(plan, smart, settings, geometry)
    timeline = _OutputTimeline(redacted if redaction is Redaction.CUT else None)
    # Re-encoded pictures keep the source's sample values (a full-range source stays full range).
    redactor = Redactor(redaction, plan.target, keep_range=True, overlays=overlays,
                        black=scan_black_picture(plan, plan.target, geometry))
    units_by_clip: dict[int, list[tuple[int, Unit]]] = {}
    for number, unit in enumerate(smart.units):
        units_by_clip.setdefault(unit.clip, []).append((number, unit))
    # The group is decoded only when a re-encoded frame needs its source picture, and only as far as the
    # last such picture.
    wanted = {n: count for n in sorted(smart.dirty)
              if (count := _pictures_needed(smart.units[n], smart.prefix(n), redacted, redactor))}
    inputs = [open_input(c.info.path) for c in plan.clips]
    decoder = _GroupDecoder(plan, smart, units_by_clip, wanted, cancel)
    try:
        template = next(s for s in inputs[0].streams.video if s.index == plan.clips[0].info.video.index)
        uniform_length = max((len(frames) for n in smart.dirty
                              for frames, uniform in _runs(smart.units[n], smart.prefix(n), redacted, redactor)
                              if uniform), default=0)
        with _SpliceWriter(out_path, template, smart, splicer, timeline, uniform_length) as writer:
            for clip_number, (clip, container) in enumerate(zip(plan.clips, inputs, strict=True)):
                stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
                for number, unit, packets in _groups(iter_video_packets(container, stream),
                                                     units_by_clip[clip_number], cancel):
                    copied = unit.packet_count if number not in smart.dirty else smart.prefix(number)
                    for packet_number, packet in enumerate(packets[:copied], start=unit.first_packet):
                        writer.copy(packet, clip_number, packet_number, unit, clip)
                    if number in smart.dirty:
                        runs = _runs(unit, copied, redacted, redactor)
                        pictures = decoder.take(number) if number in wanted else None
                        for frames, uniform in runs:
                            writer.reencode(_redacted_run(frames, uniform, unit, pictures, redacted, redactor,
                                                          timeline))
                    if progress is not None:
                        progress(min(total, unit.first_frame + unit.packet_count), total)
            writer.finish()
            written, copied_runs, repeated_runs = writer.written, tuple(writer.runs), writer.repeated_runs()
    except av.error.FFmpegError as exc:
        raise UnreadableMediaError(f"Fast rendering failed ({exc}); run again with --mode advanced.",
                                   path=plan.clips[0].info.path) from None
    finally:
        decoder.close()
        for container in inputs:
            container.close()
    cut = int(sum(redacted)) if redaction is Redaction.CUT else 0
    return RenderResult(
        check_ranges=_splice_ranges(smart, timeline.index),
        method="smart-render" if smart.dirty else "stream-copy", codec=smart.codec, frame_count=written,
        frame_rate=plan.target.frame_rate,
        width=plan.target.width, height=plan.target.height, black_frames=tuple(redactor.black),
        blurred_frames=redactor.blurred, cut_frames=cut, copied_runs=copied_runs, geometry=geometry,
        repeated_runs=repeated_runs,
        notes=(f"{len(smart.dirty)} of {len(smart.units)} groups of pictures changed, {smart.reencoded_frames} of "
               f"{total} frames re-encoded ({sum(smart.prefixes)} unchanged frames at the start of changed groups "
               "copied); the rest stream-copied",
               *((f"{redactor.masked} frames had burned-in text masked; every group of pictures showing "
                  "one was re-encoded, since the text is part of the coded picture and cannot be copied",)
                 if redactor.masked else ())))


def _groups(packets: Iterator[av.Packet], units: list[tuple[int, Unit]],
            cancel: Cancel | None) -> Iterator[tuple[int, Unit, list[av.Packet]]]:
    """(unit number, unit, its packets in decode order) for each unit of one clip, one group in memory."""
    pending = iter(units)
    number, unit = next(pending)
    group: list[av.Packet] = []
    for packet_number, packet in enumerate(packets):
        check_cancelled(cancel)
        if packet_number >= unit.first_packet + unit.packet_count:
            yield number, unit, group
            group = []
            number, unit = next(pending)
        group.append(packet)
    yield number, unit, group


class _OutputTimeline:
    """Where a timeline frame lands in the output (cut redaction moves later frames up)."""

    def __init__(self, cut: list[bool] | None) -> None:
        self.cut_before = np.concatenate(([0], np.cumsum(cut))).astype(np.int64) if cut is not None else None

    def index(self, frame: int) -> int:
        return frame - int(self.cut_before[frame]) if self.cut_before is not None else frame


class _SpliceWriter:
    """The output track: copied pictures rebased onto the output timeline, re-encoded groups spliced in."""

    def __init__(self, out_path: Path, template: av.video.stream.VideoStream, smart: SmartPlan,
                 splicer: _Splicer, timeline: _OutputTimeline, uniform_length: int = 0) -> None:
        """``uniform_length``: the longest wholly black group of the render, the length of the one black
        encoding (per idr_pic_id) that every black group is a prefix of."""
        self.smart, self.splicer, self.timeline = smart, splicer, timeline
        self.uniform_length = uniform_length
        extradata = splicer.track_extradata()
        self.out = open_output(out_path)
        try:
            self.stream = self.out.add_stream_from_template(template)
            self.stream.metadata.clear()
            self.stream.codec_tag = "avc1" if smart.codec == "h264" else "hev1"
            self.stream.codec_context.extradata = extradata
            self.out.start_encoding()
        except BaseException:
            self.out.close()
            raise
        #: Pictures written so far.
        self.written = 0
        #: True after a re-encoded group put the encoder's parameter sets in-band (HEVC).
        self.inband_changed = False
        #: Runs of copied packets, for the verifier.
        self.runs: list[CopiedRun] = []
        #: The black encoding, by idr_pic_id (made once, ``uniform_length`` long): black groups are its first
        #: pictures.
        self.uniform_groups: dict[int, list[tuple[bytes, bool]]] = {}
        #: Where each black encoding was written, by idr_pic_id: (first output packet, count) per group.
        self.uniform_instances: dict[int, list[tuple[int, int]]] = {}
        #: H.264: the slice syntax of every PPS of the track, to read idr_pic_id (two IDR pictures in a
        #: row must differ in it); None for HEVC, which has no such number.
        self.idr_syntax = (h264_slice_syntaxes(*_avcc_sets(extradata)) if smart.codec == "h264" else None)
        #: idr_pic_id of the last picture written when it is an IDR picture, else None.
        self.last_idr: int | None = None
        #: A re-encoded group of one picture (an IDR picture) waiting for the picture after it, whose
        #: idr_pic_id its own must differ from too.
        self.held: _RedactedGroup | None = None

    def __enter__(self) -> _SpliceWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.out.close()

    def _idr_pic_id(self, data: bytes) -> int | None:
        """idr_pic_id of a length-prefixed H.264 picture when it is an IDR picture, else None."""
        if self.idr_syntax is None:
            return None
        for unit in split_nal_units(data, self.smart.length_size):
            if nal_type(unit, "h264") == H264_IDR:
                try:
                    found = h264_idr_pic_id(unit, self.idr_syntax)
                except (ValueError, IndexError):
                    found = None
                # Unreadable: no number is safe next to it (only refused when a one-picture group is).
                return UNKNOWN_IDR if found is None else found
        return None

    def finish(self) -> None:
        """Write what is still held (call once after the last group)."""
        self._release(None)

    def _release(self, next_idr: int | None) -> None:
        """Encode and write the held one-picture group now that the picture after it is known (``next_idr``:
        its idr_pic_id when it is an IDR picture)."""
        if self.held is not None:
            group, self.held = self.held, None
            self._encode_group(group, next_idr)

    def _mux(self, packet: av.Packet) -> None:
        if self.idr_syntax is not None:
            self.last_idr = self._idr_pic_id(bytes(packet)) if packet.is_keyframe else None
        packet.stream = self.stream
        packet.time_base = self.smart.time_base
        self.out.mux(packet)

    def _scrubbed(self, data: bytes) -> bytes:
        """A copied picture with only its allowed NAL units (the bitstream allow-list), length-prefixed
        as the track wants."""
        smart = self.smart
        if smart.source_length_size is None:
            # An Annex B source: its access unit delimiters go (not on the allow-list), and so do its in-band
            # parameter sets, which the track's record now lists (the planner checked that they never change).
            kept = (allowed_unit(u, smart.codec) for u in split_nal_units(data, None))
            return to_length_prefixed([u for u in kept if u is not None
                                       and nal_type(u, smart.codec) not in RECORD_TYPES[smart.codec]],
                                      smart.length_size)
        return scrub_access_unit(data, smart.codec, smart.length_size)

    def copy(self, packet: av.Packet, clip_number: int, packet_number: int, unit: Unit, clip: ClipPlan) -> None:
        """One picture of a clean group, scrubbed, at its place on the output."""
        smart = self.smart
        # Rebase: the clip's first displayed frame lands on its place in the output.
        shift = self.timeline.index(unit.first_frame) * smart.frame_ticks - _display_origin(clip, unit, smart)
        pts = int(smart.clip_pts[clip_number][packet_number]) + shift
        dts = int(smart.clip_sorted_pts[clip_number][packet_number]) - smart.delay_ticks + shift
        data = self._scrubbed(bytes(packet))
        if self.held is not None:
            self._release(self._idr_pic_id(data) if packet.is_keyframe else None)
        if self.inband_changed:
            # After a group that brought its own parameter sets in-band (HEVC), the source's again (already
            # length-prefixed: added after scrubbing, which drops an Annex B source's in-band ones).
            data = self.splicer.prefix_after_reencoded() + data
        self.inband_changed = False
        packet.pts, packet.dts, packet.time_base = pts, dts, smart.time_base
        frame_order = clip_number in smart.rebuilt_clips
        # A run's timing for the verifier: source time + shift, or (rebuilt) base + packet number x ticks.
        self._record_run(clip.info.path, clip.info.video.index, packet_number,
                         pts - packet_number * smart.frame_ticks if frame_order else shift, frame_order)
        self._mux(_with_data(packet, data))
        self.written += 1

    def _record_run(self, source: Path, stream_index: int, packet_number: int, shift: int,
                    frame_order: bool) -> None:
        last = self.runs[-1] if self.runs else None
        if (last is not None and last.source == source and last.pts_shift == shift
                and last.first_packet + last.count == packet_number and last.first_output + last.count == self.written):
            self.runs[-1] = replace(last, count=last.count + 1)
        else:
            self.runs.append(CopiedRun(source, stream_index, packet_number, 1, self.written, shift, frame_order))

    def reencode(self, group: _RedactedGroup) -> None:
        """A dirty group's kept pictures encoded into one closed group (a wholly black group reuses the
        first pictures of the longest black group encoded so far: every group starts with an IDR picture,
        refers to nothing outside itself and carries no timestamp in its slices).  A group of one picture
        (H.264) waits for the next picture, so that its idr_pic_id can differ from both neighbours'."""
        if not group.frames:
            return
        self._release(None)                  # the held group comes first; this group's number adapts to it
        if len(group.frames) == 1 and self.idr_syntax is not None:
            self.held = group
            return
        self._encode_group(group, None)

    def _encode_group(self, group: _RedactedGroup, next_idr: int | None) -> None:
        frames = group.frames
        idr_pic_id = 0
        if self.idr_syntax is not None:
            free = [n for n in (0, 1) if n not in (self.last_idr, next_idr)]
            if not free or UNKNOWN_IDR in (self.last_idr, next_idr):
                raise NotSpliceable("a one-picture re-encoded group sits between IDR pictures whose idr_pic_id "
                                    "leaves no number free for it (or cannot be read)")
            idr_pic_id = free[0]
        first_out = frames[0][0]
        if group.uniform:
            # Any black group is the first pictures of one longer black encoding: with no B-frames each
            # picture refers only to earlier ones, so a prefix of a closed group is a closed group.
            encoded = self.uniform_groups.get(idr_pic_id, [])
            if len(encoded) < len(frames):
                # Once per idr_pic_id when the render says how long its longest black group is (a longer
                # encoding's first pictures need not equal a shorter one's: rate control looks ahead).
                encoded = self._encode_checked([frames[0][1]] * max(len(frames), self.uniform_length), idr_pic_id)
                self.uniform_groups[idr_pic_id] = encoded
                self.uniform_instances[idr_pic_id] = []
            encoded = encoded[:len(frames)]
            self.uniform_instances[idr_pic_id].append((self.written, len(frames)))
        else:
            encoded = self._encode_checked([f for _, f in frames], idr_pic_id)
        for n, (data, keyframe) in enumerate(encoded):
            packet = av.Packet((self.splicer.prefix_reencoded() if n == 0 else b"") + data)
            packet.pts = (first_out + n) * self.smart.frame_ticks
            packet.dts = packet.pts - self.smart.delay_ticks
            packet.is_keyframe = keyframe
            self._mux(packet)
        self.written += len(frames)
        self.inband_changed = True


    def repeated_runs(self) -> tuple[RepeatedRun, ...]:
        """Every black group but the longest of its encoding, as a repeat of that one (a prefix of it)."""
        repeats: list[RepeatedRun] = []
        for instances in self.uniform_instances.values():
            reference = max(instances, key=lambda instance: instance[1])
            repeats.extend(RepeatedRun(first, count, reference[0]) for first, count in instances
                           if (first, count) != reference)
        return tuple(sorted(repeats, key=lambda run: run.first_output))

    def _encode_checked(self, pictures: list[av.VideoFrame], idr_pic_id: int) -> list[tuple[bytes, bool]]:
        encoded = list(self.splicer.encode(pictures, idr_pic_id))
        if self.idr_syntax is not None and self._idr_pic_id(encoded[0][0]) != idr_pic_id:
            raise NotSpliceable(f"the encoder did not number its IDR picture {idr_pic_id}")
        return encoded


#: The idr_pic_id of an IDR slice that could not be read.
UNKNOWN_IDR = -1


def _avcc_sets(extradata: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    config = AvcConfig.parse(extradata)
    return config.sps, config.pps


def _splice_ranges(smart: SmartPlan, out_index: Callable[[int], int]) -> tuple[tuple[int, int], ...]:
    """Output frames that a "changes"/"splices" verification decodes, merged: every re-encoded group whole,
    the copied group before each splice whole (its last pictures are output across the splice), and the
    first picture of the copied group after each splice (its IDR picture, decoded with the parameter sets
    it switches back to; the rest of that group refers to nothing before it and is proven by packet
    identity).  A clip join counts as a splice: the group before it whole, the first picture after it."""
    units = smart.units
    whole: set[int] = set()
    head: set[int] = set()
    for n in range(len(units)):
        if n in smart.dirty:
            # A dirty unit that starts with copied packets continues the group before it unchanged.
            whole.update(m for m in ((n - 1, n) if smart.prefix(n) == 0 else (n,)) if m >= 0)
            if n + 1 < len(units):
                head.add(n + 1)
        elif n > 0 and units[n - 1].clip != units[n].clip:
            whole.add(n - 1)
            head.add(n)
    ranges: list[tuple[int, int]] = []
    for n in sorted(whole | head):
        unit = units[n]
        start = out_index(unit.first_frame)
        end = out_index(unit.first_frame + (unit.packet_count if n in whole else 1))
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


@dataclass(frozen=True)
class _RedactedGroup:
    """The pictures to encode for one re-encoded group, as (output index, picture)."""

    frames: list[tuple[int, av.VideoFrame]]
    #: Every picture is the same synthetic one (a wholly blacked-out group): its encoding is the first
    #: pictures of any longer black encoding.
    uniform: bool = False


#: A run of re-encoded frames shorter than this joins the run before it when it may (see :func:`_runs`): a
#: one-frame group is all IDR picture.
MIN_RUN = 2


def _runs(unit: Unit, copied: int, redacted: list[bool], redactor: Redactor) -> list[tuple[range, bool]]:
    """The timeline frames of a dirty unit after its copied prefix, as the closed groups to encode them
    into: (frames, uniform).  A uniform run is wholly blacked out or cut (its pictures need no source);
    the others need the decoded group.  Each run becomes its own closed group starting with an IDR
    picture, so a black stretch is encoded once per length and in-body frames after it are re-encoded
    from their own IDR picture.

    A short run joins the run before it only when it needs its source (in-body frames coded from black are
    fine): a black frame is never coded from a picture of the surgery, whose residue the encoder can leave
    in it (a few pixels above black after a detailed, noisy picture), failing the redaction check."""
    first = unit.first_frame + copied
    runs: list[list[int]] = []                     # [start, stop, uniform]
    for index in range(first, unit.frame_range.stop):
        uniform = int(redactor.replaces_all([redacted[index]]))
        if runs and runs[-1][2] == uniform:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1, uniform])
    merged: list[list[int]] = []
    for run in runs:
        if merged and not run[2] and min(merged[-1][1] - merged[-1][0], run[1] - run[0]) < MIN_RUN:
            merged[-1] = [merged[-1][0], run[1], 0]
        else:
            merged.append(run)
    return [(range(a, b), bool(uniform)) for a, b, uniform in merged]


def _pictures_needed(unit: Unit, copied: int, redacted: list[bool], redactor: Redactor) -> int:
    """How many of a dirty unit's first pictures (display order) its re-encoded frames need decoded (0: none,
    every re-encoded frame is black or cut)."""
    needed = [index for frames, uniform in _runs(unit, copied, redacted, redactor) if not uniform
              for index in frames if not redactor.replaces_all([redacted[index]])]
    return needed[-1] - unit.first_frame + 1 if needed else 0


class _GroupDecoder:
    """Decodes the dirty groups whose source pictures the render needs on a thread of its own, the next one
    while the render copies packets and encodes the one before (FFmpeg and x264 leave the GIL, so both cores
    work).  Each clip with such a group is demuxed once more, in order, without seeking.  At most one decoded
    group waits for the render, so memory holds at most two decoded groups."""

    def __init__(self, plan: JoinPlan, smart: SmartPlan, units_by_clip: dict[int, list[tuple[int, Unit]]],
                 wanted: dict[int, int], cancel: Cancel | None) -> None:
        """``wanted``: unit number -> how many of its first pictures to decode."""
        self._ready: queue.Queue[tuple[int, list[av.VideoFrame] | BaseException]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(plan, smart, units_by_clip, wanted, cancel),
                                        name="group-decoder", daemon=True)
        if wanted:
            self._thread.start()

    def _run(self, plan: JoinPlan, smart: SmartPlan, units_by_clip: dict[int, list[tuple[int, Unit]]],
             wanted: dict[int, int], cancel: Cancel | None) -> None:
        try:
            for clip_number, clip in enumerate(plan.clips):
                units = units_by_clip[clip_number]
                last = max((n for n, _ in units if n in wanted), default=None)
                if last is None:
                    continue
                with open_input(clip.info.path) as container:
                    stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
                    for number, unit, packets in _groups(iter_video_packets(container, stream), units, cancel):
                        if number in wanted:
                            if not self._hand_over(number, _decode_group(unit, packets, smart, clip, wanted[number])):
                                return
                        if number == last or self._stop.is_set():
                            break
        except BaseException as exc:     # raised in the render's thread when it asks for the group
            self._hand_over(-1, exc)

    def _hand_over(self, number: int, pictures: list[av.VideoFrame] | BaseException) -> bool:
        """Queue a decoded group for the render; False when the render stopped."""
        while not self._stop.is_set():
            try:
                self._ready.put((number, pictures), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(self, number: int) -> list[av.VideoFrame]:
        """The decoded pictures of unit ``number`` (the groups are taken in order), or what decoding raised."""
        got, pictures = self._ready.get()
        if isinstance(pictures, BaseException):
            raise pictures
        if got != number:
            raise AssertionError(f"the group decoder gave unit {got} where the render wanted {number}")
        return pictures

    def close(self) -> None:
        """Stop the thread (after the render, or when it failed) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _decode_group(unit: Unit, packets: list[av.Packet], smart: SmartPlan, clip: ClipPlan,
                  wanted: int | None = None) -> list[av.VideoFrame]:
    """A dirty group's pictures in display order, decoded from its buffered packets: all of them, or its
    first ``wanted`` (decoding stops once they are out, each at its own presentation time; a clip whose
    timestamps were rebuilt is decoded whole)."""
    decoder = video_codec(smart.codec, "r")
    decoder.extradata = smart.decoder_extradata if smart.source_length_size is None else smart.extradata
    decoder.thread_type = "AUTO"             # both cores: the group is decoded whole, latency does not matter
    shown = sorted(p.pts for p in packets if p.pts is not None)
    if unit.clip in smart.rebuilt_clips or len(shown) != len(packets):
        wanted = None
    frames: list[av.VideoFrame] = []
    for packet in [*packets, None]:
        frames.extend(decoder.decode(packet))
        if wanted is not None and len(frames) >= wanted:
            if [frame.pts for frame in frames[:wanted]] == shown[:wanted]:
                return frames[:wanted]
            wanted = None                    # not the pictures expected: decoded whole and checked below
    if len(frames) != unit.packet_count:
        raise UnreadableMediaError(f"{clip.info.path}: a group of pictures decoded to {len(frames)} frames "
                                   f"instead of {unit.packet_count}; run again with --mode advanced.",
                                   path=clip.info.path)
    return frames


def _redacted_run(frames: range, uniform: bool, unit: Unit, pictures: list[av.VideoFrame] | None,
                  redacted: list[bool], redactor: Redactor, timeline: _OutputTimeline) -> _RedactedGroup:
    """The pictures of one run of a dirty unit, redacted: (output index, picture) per kept frame.  A uniform
    run (every frame blacked out or cut) is made without its source pictures."""
    kept = []
    for index in frames:
        out_index = timeline.index(index)
        if uniform or redactor.replaces_all([redacted[index]]):
            # Black or cut without looking at the source picture (which may not have been decoded).
            picture = redactor.replacement(out_index)
        else:
            assert pictures is not None
            picture = redactor.apply(pictures[index - unit.first_frame], redacted[index], out_index, index)
        if picture is not None:
            kept.append((out_index, picture))
    return _RedactedGroup(kept, uniform=uniform)


def _with_data(packet: av.Packet, data: bytes) -> av.Packet:
    """``packet``'s timing and keyframe flag around other bytes (reframed, or with NAL units added)."""
    copy = av.Packet(data)
    copy.pts, copy.dts, copy.is_keyframe = packet.pts, packet.dts, packet.is_keyframe
    return copy
