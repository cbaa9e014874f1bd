"""Reading a video for detection: the packet index, keyframe scoring, GOP refinement, sequential scans.

Frame indices are presentation order over the frames a full decode displays, counted from 0.  The
packet index gets them without decoding: every displayed packet (not hidden by an edit list) is one
frame, and its rank by presentation timestamp is its index.  Decoded frames are mapped back to an
index through their ``pts``.

The compressed-domain cues used to decide which GOPs need every frame decoded live here too
(:func:`suspicious_gops`): they only need packet sizes, keyframe flags and timestamps.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import CancelledError, NoVideoStreamError, UnreadableMediaError
from ..media.probe import open_input
from .base import SHRINK_HOOK, Detector


@dataclass(frozen=True)
class DetectProgress:
    """Measured work: ``done`` of ``total`` ``unit`` in ``phase`` (``total`` is None when unknown)."""

    phase: str          # "index" (demux + keyframes), "refine", "sequential"
    done: int
    total: int | None
    unit: str           # "packets" or "frames"


ProgressCallback = Callable[[DetectProgress], None]
CancelCallback = Callable[[], bool]

#: Progress is reported at most once per this many packets/frames (and at the end of a phase).
PROGRESS_EVERY = 64


@dataclass(frozen=True)
class ReadSettings:
    """How frames are decoded and shrunk for the detector."""

    batch_size: int = 64
    #: swscale scaler used to shrink decoded frames to the detector's input size: PyAV's default
    #: (BILINEAR, antialiased when shrinking), the one the built-in model was trained and evaluated with,
    #: so the stills figures carry over.  AREA is ~0.4 ms per 1080p frame cheaper but shifts built-in
    #: scores by up to 0.04 (one decision flip in ~150 development stills).
    interpolation: str = "BILINEAR"
    #: Decoder threads (0 = FFmpeg decides; a frame-threaded decoder keeps both cores busy).
    threads: int = 0
    #: swscale threads for the shrink: one, because the output is tiny and the decoder threads already
    #: use the cores (slice threads here cost ~15 % more CPU and 2-3x the wall time per frame).
    scale_threads: int = 1


class _Reader:
    """Shared plumbing: cancel checks, throttled progress, frame conversion, batched scoring."""

    def __init__(self, path: Path, detector: Detector, settings: ReadSettings,
                 progress: ProgressCallback | None, cancel: CancelCallback | None) -> None:
        self.path = path
        self.detector = detector
        self.settings = settings
        self.progress = progress
        self.cancel = cancel
        self.width, self.height = detector.input_size
        self.frames_decoded = 0
        self._batch_frames: list[npt.NDArray[Any]] = []
        self._batch_keys: list[int] = []
        # Compact typed arrays: an every-frame scan of a 10-hour video keeps ~1 M of each.
        self.scored_keys = array("q")
        self.scored_values = array("f")

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError(f"Detection on {self.path} was cancelled; no result was produced. "
                                 "Run it again to detect this video.", path=self.path)

    def report(self, phase: str, done: int, total: int | None, unit: str, *, force: bool = False) -> None:
        if self.progress is not None and (force or done % PROGRESS_EVERY == 0):
            self.progress(DetectProgress(phase, done, total, unit))

    def add(self, key: int, frame: av.VideoFrame) -> None:
        """Queue one decoded frame, identified by ``key`` (a pts or a frame index), for scoring."""
        shrink = getattr(self.detector, SHRINK_HOOK, None)
        if shrink is not None:
            # The detector shrinks whole frames itself, exactly as it was trained.
            self._batch_frames.append(shrink(frame.to_ndarray(format="rgb24")[None])[0])
        else:
            self._batch_frames.append(frame.to_ndarray(width=self.width, height=self.height, format="rgb24",
                                                       interpolation=self.settings.interpolation,
                                                       threads=self.settings.scale_threads))
        self._batch_keys.append(key)
        if len(self._batch_frames) >= self.settings.batch_size:
            self.flush()

    @property
    def pending(self) -> list[int]:
        return self._batch_keys

    def flush(self) -> None:
        if not self._batch_frames:
            return
        batch = np.stack(self._batch_frames)
        scores = np.asarray(self.detector.score(batch), dtype=np.float32).reshape(-1)
        if scores.shape[0] != batch.shape[0]:
            raise RuntimeError(f"detector {self.detector.name!r} returned {scores.shape[0]} scores for "
                               f"{batch.shape[0]} frames")
        self.scored_keys.extend(self._batch_keys)
        self.scored_values.extend(scores.tolist())
        self._batch_frames.clear()
        self._batch_keys.clear()


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise NoVideoStreamError(f"{path} has no video stream (audio-only?); give the video recording instead.",
                             path=path)


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise UnreadableMediaError(f"{path} does not state a frame rate, so margins in seconds cannot be turned "
                               "into frames; remux it (e.g. ffmpeg -i IN -c copy -r 25 OUT.mp4).", path=path)


def _damaged(path: Path, exc: Exception) -> UnreadableMediaError:
    return UnreadableMediaError(f"{path} is damaged ({exc}); check that it plays, copy it again from the "
                                "recorder, or remove it from the case.", path=path)


def _packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             path: Path) -> Iterator[av.Packet]:
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.dts is None:
                continue  # the empty flush packet the demuxer ends with
            yield packet
    except av.error.FFmpegError as exc:
        raise _damaged(path, exc) from None


def _decode(packet: av.Packet | None, stream: av.video.stream.VideoStream) -> list[av.VideoFrame]:
    try:
        return list(stream.codec_context.decode(packet))
    except av.error.InvalidDataError:
        # A corrupt packet yields no frame; the frames around it are still scored, and the frame it
        # should have given stays unsampled (labelled conservatively by the smoothing).
        return []


# --------------------------------------------------------------------------------------------------
# Packet index


@dataclass(frozen=True)
class PacketIndex:
    """Every displayed frame of the video stream, from demuxing alone (arrays in presentation order)."""

    pts: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    keyframe: npt.NDArray[np.bool_]
    #: Decoded after a frame shown later (a B-frame in the usual case): sizes are compared per class.
    reordered: npt.NDArray[np.bool_]
    #: Presentation index of each packet, in decode order.
    decode_order: npt.NDArray[np.int64]

    @property
    def frame_count(self) -> int:
        return int(self.pts.shape[0])

    @property
    def keyframe_indices(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.keyframe).astype(np.int64)

    def index_of_pts(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        pos = int(np.searchsorted(self.pts, pts))
        if pos < self.pts.shape[0] and int(self.pts[pos]) == pts:
            return pos
        return None

    @classmethod
    def from_decode_order(cls, pts: list[int], size: list[int], keyframe: list[bool]) -> "PacketIndex":
        pts_arr = np.asarray(pts, dtype=np.int64)
        running_max = np.maximum.accumulate(pts_arr) if pts_arr.size else pts_arr
        reordered = np.zeros(pts_arr.shape, dtype=bool)
        if pts_arr.size > 1:
            reordered[1:] = pts_arr[1:] < running_max[:-1]
        order = np.argsort(pts_arr, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return cls(pts=pts_arr[order], size=np.asarray(size, dtype=np.int64)[order],
                   keyframe=np.asarray(keyframe, dtype=bool)[order], reordered=reordered[order],
                   decode_order=rank.astype(np.int64))


@dataclass(frozen=True)
class CoarseScan:
    index: PacketIndex
    frame_rate: Fraction
    #: Presentation indices of the frames the coarse pass scored (the keyframes, or every reference
    #: picture with coarse_frames="reference"), and their scores.
    key_frames: npt.NDArray[np.int64]
    key_scores: npt.NDArray[np.float32]
    frames_decoded: int


#: What the coarse pass decodes: keyframes only (fastest, relies on packet-size cues between them), or
#: every reference picture (a short excursion is seen directly, whatever the packet sizes say).
COARSE_FRAMES = ("keyframes", "reference")


class PtsUnusableError(Exception):
    """The packets lack unique timestamps; frame indices must come from a sequential decode."""


def coarse_scan(path: Path, detector: Detector, settings: ReadSettings,
                progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
                frames: str = "keyframes") -> CoarseScan:
    """Demux every packet of the video stream; decode and score the keyframes only, or (``frames=
    "reference"``) every picture that others are predicted from (all but the disposable B-frames)."""
    if frames not in COARSE_FRAMES:
        raise ValueError(f"coarse frames must be one of {', '.join(COARSE_FRAMES)}, got {frames!r}")
    every_reference = frames == "reference"
    reader = _Reader(path, detector, settings, progress, cancel)
    pts_list: list[int] = []
    sizes: list[int] = []
    keys: list[bool] = []
    with open_input(path) as container:
        stream = _video_stream(container, path)
        rate = _frame_rate(stream, path)
        total = int(stream.frames) if stream.frames else None
        stream.codec_context.skip_frame = "NONREF" if every_reference else "NONKEY"
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = settings.threads
        for packet in _packets(container, stream, path):
            if packet.is_discard:
                continue  # hidden by an edit list: never displayed, so not a frame of the timeline
            if packet.pts is None:
                raise PtsUnusableError(str(path))
            pts_list.append(int(packet.pts))
            sizes.append(int(packet.size))
            keys.append(bool(packet.is_keyframe))
            if packet.is_keyframe or every_reference:
                for frame in _decode(packet, stream):
                    reader.frames_decoded += 1
                    if frame.pts is not None:
                        reader.add(int(frame.pts), frame)
            reader.report("index", len(pts_list), total, "packets")
            if len(pts_list) % PROGRESS_EVERY == 0:
                reader.check_cancel()
        for frame in _decode(None, stream):
            reader.frames_decoded += 1
            if frame.pts is not None:
                reader.add(int(frame.pts), frame)
        reader.flush()
        reader.report("index", len(pts_list), len(pts_list), "packets", force=True)
    if len(set(pts_list)) != len(pts_list):
        raise PtsUnusableError(str(path))
    index = PacketIndex.from_decode_order(pts_list, sizes, keys)
    frames, scores = [], []
    for pts, score in zip(reader.scored_keys, reader.scored_values):
        idx = index.index_of_pts(pts)
        if idx is not None:
            frames.append(idx)
            scores.append(score)
    return CoarseScan(index=index, frame_rate=rate, key_frames=np.asarray(frames, dtype=np.int64),
                      key_scores=np.asarray(scores, dtype=np.float32), frames_decoded=reader.frames_decoded)


# --------------------------------------------------------------------------------------------------
# Which GOPs to decode in full


@dataclass(frozen=True)
class CueSettings:
    """Thresholds of the compressed-domain cues that mark a GOP as worth decoding in full."""

    #: A packet this many times larger than the median of its neighbours of the same class...
    spike_ratio: float = 1.5
    #: ...and at least this fraction of its GOP's keyframe size is a scene change (intra-coded picture).
    spike_min_key_fraction: float = 0.15
    #: Packets on each side (same class, decode order) that make up the local median.
    spike_window: int = 16
    #: A GOP whose mean non-key packet is this many times its neighbouring GOPs' median: content changed.
    level_ratio: float = 2.0
    #: GOPs on each side compared for the level test.
    level_window: int = 4


def _local_median(values: npt.NDArray[np.int64], half_window: int) -> npt.NDArray[np.float64]:
    if values.size == 0:
        return values.astype(np.float64)
    padded = np.pad(values.astype(np.float64), half_window, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_window + 1)
    return np.median(windows, axis=1)


def gop_starts(index: PacketIndex) -> npt.NDArray[np.int64]:
    """Presentation index where each GOP starts (frames before the first keyframe form GOP 0 too)."""
    keys = index.keyframe_indices
    if keys.size == 0 or keys[0] != 0:
        keys = np.concatenate(([0], keys)).astype(np.int64)
    return keys


def scene_change_frames(index: PacketIndex, cues: CueSettings) -> npt.NDArray[np.int64]:
    """Presentation indices of non-key packets that look like cuts, from their sizes alone."""
    starts = gop_starts(index)
    gop_of_frame = np.searchsorted(starts, np.arange(index.frame_count), side="right") - 1
    key_size = index.size[starts]  # the first frame of each GOP (a keyframe unless the file starts oddly)
    decode_to_frame = np.argsort(index.decode_order)  # frame index of the i-th packet in decode order
    key_in_decode = index.keyframe[decode_to_frame]
    forward_in_decode = ~key_in_decode & ~index.reordered[decode_to_frame]
    # Encoders size the first forward-predicted picture after a keyframe differently from the others
    # (x264 spends bits to lift it from the keyframe's quality), so it forms a class of its own,
    # compared with the first forward pictures of the neighbouring GOPs.
    gop_number = np.cumsum(key_in_decode)
    first_forward = np.zeros_like(forward_in_decode)
    forward_positions = np.flatnonzero(forward_in_decode)
    if forward_positions.size:
        gops_of_forward = gop_number[forward_positions]
        is_first = np.concatenate(([True], gops_of_forward[1:] != gops_of_forward[:-1]))
        first_forward[forward_positions[is_first]] = True
    classes = (first_forward, forward_in_decode & ~first_forward, ~key_in_decode & ~forward_in_decode)
    found: list[npt.NDArray[np.int64]] = []
    for member in classes:
        frames = decode_to_frame[member]
        if frames.size == 0:
            continue
        sizes = index.size[frames]
        median = _local_median(sizes, cues.spike_window)
        floor = cues.spike_min_key_fraction * key_size[gop_of_frame[frames]]
        spikes = (sizes >= cues.spike_ratio * np.maximum(median, 1.0)) & (sizes >= floor)
        found.append(frames[spikes])
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def level_shift_gops(index: PacketIndex, cues: CueSettings) -> npt.NDArray[np.int64]:
    """GOPs whose inter-coded packets are much larger on average than those of the GOPs around them."""
    starts = gop_starts(index)
    ends = np.append(starts[1:], index.frame_count)
    non_key = np.where(index.keyframe, 0, index.size)
    counts = np.add.reduceat((~index.keyframe).astype(np.int64), starts) if starts.size else np.zeros(0)
    totals = np.add.reduceat(non_key, starts) if starts.size else np.zeros(0)
    means = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
    flagged = []
    for gop in range(starts.size):
        lo, hi = max(0, gop - cues.level_window), min(starts.size, gop + cues.level_window + 1)
        neighbours = np.concatenate((means[lo:gop], means[gop + 1:hi]))
        if neighbours.size and ends[gop] > starts[gop] and means[gop] >= cues.level_ratio * max(
                float(np.median(neighbours)), 1.0):
            flagged.append(gop)
    return np.asarray(flagged, dtype=np.int64)


@dataclass(frozen=True)
class RefinePlan:
    #: Frame ranges [start, end) to decode in full, sorted and disjoint, each starting on a GOP start.
    ranges: tuple[tuple[int, int], ...]
    #: Per range: where its last GOP starts when the keyframe right after the range is out of body (else
    #: None).  Decoding may stop at the first out-of-body frame found from there: every frame between it
    #: and that keyframe is redacted anyway, and the boundary it marks is already frame-exact.
    stop_at_oob_from: tuple[int | None, ...]
    #: Per range: from which frame decoding may stop once the latest frame scored is clearly in body
    #: (below the suspect threshold), when the keyframe after the range is in body or the video ends
    #: there, and no size spike or level shift lies further on.  The frames skipped then sit between
    #: two in-body samples with no compressed-domain cue, exactly like those of an unflagged GOP.
    stop_at_inbody_from: tuple[int | None, ...]
    gops_total: int
    gops_flagged: int
    scene_changes: int

    @property
    def frames(self) -> int:
        return sum(end - start for start, end in self.ranges)


def suspicious_gops(index: PacketIndex, key_frames: npt.NDArray[np.int64], key_scores: npt.NDArray[np.float32],
                    enter_threshold: float, suspect_threshold: float, cues: CueSettings) -> RefinePlan:
    """Decide which GOPs must be decoded frame by frame for frame-exact, complete spans.

    A GOP is skipped only when both keyframes bounding it score ``>= enter_threshold`` (the smoothing
    redacts all of it anyway), or when both score below ``suspect_threshold`` and nothing in its
    packets suggests a scene change.  Everything else — disagreeing or uncertain keyframes, a missing
    keyframe score, a size spike, a level shift — is decoded in full.
    """
    starts = gop_starts(index)
    n_gops = int(starts.size)
    score_at = dict(zip(key_frames.tolist(), key_scores.tolist()))
    cue_gops = np.zeros(n_gops, dtype=bool)
    changes = scene_change_frames(index, cues)
    if changes.size:
        cue_gops[np.searchsorted(starts, changes, side="right") - 1] = True
    level_gops = np.zeros(n_gops, dtype=bool)
    level_gops[level_shift_gops(index, cues)] = True
    cue_gops |= level_gops

    def state(frame: int | None) -> str:
        if frame is None:
            return "end"
        score = score_at.get(frame)
        if score is None or np.isnan(score):
            return "unknown"
        if score >= enter_threshold:
            return "oob"
        return "body" if score < suspect_threshold else "uncertain"

    sample_frames = np.sort(key_frames)
    flagged = np.zeros(n_gops, dtype=bool)
    for gop in range(n_gops):
        left = state(int(starts[gop]))
        right = state(int(starts[gop + 1]) if gop + 1 < n_gops else None)
        # Samples inside the GOP (the coarse pass may score more than keyframes) must agree too.
        end = int(starts[gop + 1]) if gop + 1 < n_gops else index.frame_count
        lo, hi = np.searchsorted(sample_frames, [int(starts[gop]) + 1, end])
        inside = {state(int(f)) for f in sample_frames[lo:hi]}
        if left == "oob" and right in ("oob", "end") and inside <= {"oob"}:
            continue
        if left == "body" and right in ("body", "end") and not cue_gops[gop] and inside <= {"body"}:
            continue
        flagged[gop] = True

    ranges: list[tuple[int, int]] = []
    oob_stops: list[int | None] = []
    inbody_stops: list[int | None] = []
    for gop in np.flatnonzero(flagged):
        start = int(starts[gop])
        end = int(starts[gop + 1]) if gop + 1 < n_gops else index.frame_count
        right = state(end if gop + 1 < n_gops else None)
        oob_stop = start if right == "oob" else None
        inbody_stop = None
        if right in ("body", "end") and not level_gops[gop]:
            # Past the last size spike of this GOP, an in-body frame followed by nothing but an in-body
            # keyframe (or the end) is the situation of an unflagged GOP: it is trusted the same way.
            spikes = changes[(changes >= start) & (changes < end)]
            inbody_stop = int(spikes[-1]) if spikes.size else start
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
            oob_stops[-1], inbody_stops[-1] = oob_stop, inbody_stop
        else:
            ranges.append((start, end))
            oob_stops.append(oob_stop)
            inbody_stops.append(inbody_stop)
    return RefinePlan(ranges=tuple(ranges), stop_at_oob_from=tuple(oob_stops),
                      stop_at_inbody_from=tuple(inbody_stops), gops_total=n_gops,
                      gops_flagged=int(flagged.sum()), scene_changes=int(changes.size))


# --------------------------------------------------------------------------------------------------
# Decoding frames in full


@dataclass(frozen=True)
class ScoredFrames:
    frames: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    frames_decoded: int


#: Frames scored at a time while looking for the first out-of-body frame of a range's last GOP.
STOP_CHECK_BATCH = 4


def score_ranges(path: Path, index: PacketIndex, plan: RefinePlan, detector: Detector, settings: ReadSettings,
                 enter_threshold: float, suspect_threshold: float, progress: ProgressCallback | None = None,
                 cancel: CancelCallback | None = None, skip: set[int] | frozenset[int] = frozenset()
                 ) -> ScoredFrames:
    """Decode every frame of each planned range (seeking to its keyframe) and score those not in ``skip``.

    A range ends early, when the plan allows it, at the first frame scoring ``>= enter_threshold``
    (:attr:`RefinePlan.stop_at_oob_from`) or once the latest frame scored is below
    ``suspect_threshold`` (:attr:`RefinePlan.stop_at_inbody_from`).
    """
    reader = _Reader(path, detector, settings, progress, cancel)
    total = plan.frames
    done = 0
    with open_input(path) as container:
        stream = _video_stream(container, path)
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = settings.threads
        for (start, end), oob_from, inbody_from in zip(plan.ranges, plan.stop_at_oob_from,
                                                        plan.stop_at_inbody_from):
            wanted = end - start
            seen: set[int] = set()
            checked = len(reader.scored_values)
            zone = min((z for z in (oob_from, inbody_from) if z is not None), default=None)

            def may_stop() -> bool:
                """Score what is queued; tell whether the rest of the range is settled without decoding."""
                nonlocal checked
                reader.flush()
                keys, values = reader.scored_keys[checked:], reader.scored_values[checked:]
                checked = len(reader.scored_values)
                if oob_from is not None and any(k >= oob_from and v >= enter_threshold
                                                for k, v in zip(keys, values)):
                    return True
                if inbody_from is not None and keys:
                    latest = max(range(len(keys)), key=keys.__getitem__)
                    return keys[latest] > inbody_from and values[latest] < suspect_threshold
                return False
            try:
                container.seek(int(index.pts[start]), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise _damaged(path, exc) from None
            keyframes_past_end = 0
            for packet in _packets(container, stream, path):
                reader.check_cancel()
                idx = index.index_of_pts(packet.pts)
                if packet.is_keyframe and idx is not None and idx >= end:
                    # Open-GOP leading frames shown before ``end`` are decoded after the next keyframe;
                    # two keyframes past the range nothing of it can follow.
                    keyframes_past_end += 1
                    if keyframes_past_end >= 2:
                        break
                stop_now = False
                for frame in _decode(packet, stream):
                    reader.frames_decoded += 1
                    fidx = index.index_of_pts(frame.pts)
                    if fidx is None or not start <= fidx < end or fidx in seen:
                        continue
                    seen.add(fidx)
                    done += 1
                    if fidx not in skip:
                        reader.add(fidx, frame)
                    reader.report("refine", done, total, "frames")
                    if (zone is not None and fidx >= zone and len(reader.pending) >= STOP_CHECK_BATCH
                            and may_stop()):
                        stop_now = True
                if len(seen) >= wanted:
                    break
                if stop_now:
                    # The frames left are settled by the samples around them (see RefinePlan).
                    done += wanted - len(seen)
                    break
            else:
                for frame in _decode(None, stream):
                    reader.frames_decoded += 1
                    fidx = index.index_of_pts(frame.pts)
                    if fidx is not None and start <= fidx < end and fidx not in seen:
                        seen.add(fidx)
                        done += 1
                        if fidx not in skip:
                            reader.add(fidx, frame)
        reader.flush()
        reader.report("refine", done, total, "frames", force=True)
    return ScoredFrames(frames=np.asarray(reader.scored_keys, dtype=np.int64),
                        scores=np.asarray(reader.scored_values, dtype=np.float32),
                        frames_decoded=reader.frames_decoded)


@dataclass(frozen=True)
class SequentialScan:
    frame_count: int
    frame_rate: Fraction
    frames: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    frames_decoded: int


def score_sequential(path: Path, detector: Detector, settings: ReadSettings, step: int = 1,
                     progress: ProgressCallback | None = None, cancel: CancelCallback | None = None
                     ) -> SequentialScan:
    """Decode every frame in order and score one frame out of ``step`` (0, step, 2*step, ...).

    Frames reach the detector in presentation order and at a regular rate, as a stateful detector
    (an LSTM) requires.  The frame count is the number of frames the decoder displayed.
    """
    if step < 1:
        raise ValueError(f"the sampling step must be at least 1 frame, got {step}")
    reader = _Reader(path, detector, settings, progress, cancel)
    count = 0
    with open_input(path) as container:
        stream = _video_stream(container, path)
        rate = _frame_rate(stream, path)
        total = int(stream.frames) if stream.frames else None
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = settings.threads

        def take(frames: list[av.VideoFrame]) -> None:
            nonlocal count
            for frame in frames:
                if count % step == 0:
                    reader.add(count, frame)
                count += 1
                reader.report("sequential", count, total, "frames")

        for packet in _packets(container, stream, path):
            reader.check_cancel()
            take(_decode(packet, stream))
        take(_decode(None, stream))
        reader.frames_decoded = count
        reader.flush()
        reader.report("sequential", count, count, "frames", force=True)
    return SequentialScan(frame_count=count, frame_rate=rate,
                          frames=np.asarray(reader.scored_keys, dtype=np.int64),
                          scores=np.asarray(reader.scored_values, dtype=np.float32), frames_decoded=count)
