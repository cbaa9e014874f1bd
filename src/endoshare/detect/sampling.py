"""Reading a video for detection: the packet index with keyframe scores, GOP refinement, sequential scans.

Frame indices are presentation order over the frames a full decode displays, counted from 0.  The
packet index gets them without decoding: every displayed packet (not hidden by an edit list) is one
frame, and its rank by presentation timestamp is its index.  Decoded frames are mapped back to an
index through their ``pts``.  Which GOPs need every frame decoded is decided in :mod:`.cues`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import CancelledError, NoVideoStreamError, UnreadableMediaError
from ..media.probe import open_input
from .base import SHRINK_HOOK, Detector
from .cues import PacketIndex, RefinePlan


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
    #: Coarse-to-fine only: skip the in-loop deblocking filter when decoding for the detector (~20 % less
    #: decoder CPU on 1080p H.264).  Block edges it would smooth vanish when a frame is squashed to the
    #: model's 128 pixels: built-in scores move by < 0.01 (tests/test_detect_video.py pins the tolerance).
    #: The sequential scan always decodes exactly, as a stateful detector was trained.
    skip_loop_filter: bool = True
    #: Coarse-to-fine refine: score one decoded frame out of this many (counted from the GOP's start), and
    #: every frame with a size spike.  A frame left out is scored after all unless both its neighbours are
    #: clearly in body (below the suspect threshold) or both out of body (at or above the entry
    #: threshold), so boundaries stay frame-exact; between two such neighbours it takes their side in the
    #: smoothing (redacted between two out-of-body samples, in body between two in-body ones, as a frame
    #: of an unflagged GOP is).  Decoding is unchanged: every frame of the range is still decoded.
    refine_step: int = 2

    def __post_init__(self) -> None:
        step: object = self.refine_step          # as given, perhaps from JSON
        if not isinstance(step, int) or step < 1:
            raise ValueError(f"refine_step must be a whole number of frames >= 1, got {self.refine_step!r}")


def _decoder_options(settings: ReadSettings) -> dict[str, str]:
    return {"skip_loop_filter": "all"} if settings.skip_loop_filter else {}


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


@dataclass(frozen=True)
class CoarseScan:
    index: PacketIndex
    frame_rate: Fraction
    #: Presentation indices of the frames the coarse pass scored (the keyframes, or every reference
    #: picture with coarse_frames="reference"), and their scores.
    key_frames: npt.NDArray[np.int64]
    key_scores: npt.NDArray[np.float32]
    frames_decoded: int


class KeyframeSink(Protocol):
    """Takes the keyframes the coarse pass decodes, as they are decoded (presentation order), then the
    means to place them: another reader (the overlay finder) sees them without decoding them again."""

    def keyframe(self, pts: int, frame: av.VideoFrame) -> None: ...

    def scanned(self, frame_of: Callable[[int], int | None]) -> None:
        """Every keyframe was given; ``frame_of`` maps a pts to its presentation index (None: not shown)."""


#: What the coarse pass decodes: keyframes only (fastest, relies on packet-size cues between them), or
#: every reference picture (a short excursion is seen directly, whatever the packet sizes say).
COARSE_FRAMES = ("keyframes", "reference")


class PtsUnusableError(Exception):
    """The packets lack unique timestamps; frame indices must come from a sequential decode."""


def coarse_scan(path: Path, detector: Detector, settings: ReadSettings,
                progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
                frames: str = "keyframes", sink: KeyframeSink | None = None) -> CoarseScan:
    """Demux every packet of the video stream; decode and score the keyframes only, or (``frames=
    "reference"``) every picture that others are predicted from (all but the disposable B-frames).

    With keyframes only, each decoded keyframe also goes to ``sink``, and ``sink.scanned`` is called once
    the scan completed (not when it fails half-way).
    """
    if frames not in COARSE_FRAMES:
        raise ValueError(f"coarse frames must be one of {', '.join(COARSE_FRAMES)}, got {frames!r}")
    every_reference = frames == "reference"
    sink = None if every_reference else sink
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
        stream.codec_context.options = _decoder_options(settings)
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
                        if sink is not None:
                            sink.keyframe(int(frame.pts), frame)
            reader.report("index", len(pts_list), total, "packets")
            if len(pts_list) % PROGRESS_EVERY == 0:
                reader.check_cancel()
        for frame in _decode(None, stream):
            reader.frames_decoded += 1
            if frame.pts is not None:
                reader.add(int(frame.pts), frame)
                if sink is not None:
                    sink.keyframe(int(frame.pts), frame)
        reader.flush()
        reader.report("index", len(pts_list), len(pts_list), "packets", force=True)
    if len(set(pts_list)) != len(pts_list):
        raise PtsUnusableError(str(path))
    index = PacketIndex.from_decode_order(pts_list, sizes, keys)
    if sink is not None:
        sink.scanned(index.index_of_pts)
    # (not "frames": that is the str parameter saying what was decoded)
    scored_frames: list[int] = []
    scores: list[float] = []
    for pts, score in zip(reader.scored_keys, reader.scored_values, strict=True):
        idx = index.index_of_pts(pts)
        if idx is not None:
            scored_frames.append(idx)
            scores.append(score)
    return CoarseScan(index=index, frame_rate=rate, key_frames=np.asarray(scored_frames, dtype=np.int64),
                      key_scores=np.asarray(scores, dtype=np.float32), frames_decoded=reader.frames_decoded)


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
                 cancel: CancelCallback | None = None, known: dict[int, float] | None = None,
                 always: frozenset[int] = frozenset()) -> ScoredFrames:
    """Decode every frame of each planned range (seeking to its keyframe) and score those not already
    ``known`` (frame -> score, from the coarse pass): one out of ``settings.refine_step``, the frames in
    ``always`` (size spikes), and each frame left out whose neighbours disagree (see ReadSettings).

    A range ends early, when the plan allows it, at the first frame scoring ``>= enter_threshold``
    (:attr:`RefinePlan.stop_at_oob_from`) or once the latest frame scored is below
    ``suspect_threshold`` (:attr:`RefinePlan.stop_at_inbody_from`).
    """
    reader = _Reader(path, detector, settings, progress, cancel)
    total = plan.frames
    done = 0
    known = dict(known or {})
    step = settings.refine_step
    #: Decoded frames left unscored for now, by frame index.
    held: dict[int, av.VideoFrame] = {}

    merged = 0

    def learn() -> None:
        """Score what is queued and remember the scores."""
        nonlocal merged
        reader.flush()
        known.update(zip(reader.scored_keys[merged:], reader.scored_values[merged:], strict=True))
        merged = len(reader.scored_keys)

    def settle_held(final: bool) -> None:
        """Score the held frames whose neighbours disagree (or, at the end of a range, are unknown)."""
        learn()
        for fidx in sorted(held):
            left, right = known.get(fidx - 1), known.get(fidx + 1)
            if left is None or right is None:
                if not final:
                    continue
                reader.add(fidx, held.pop(fidx))
            elif (left < suspect_threshold and right < suspect_threshold) or (
                    left >= enter_threshold and right >= enter_threshold):
                del held[fidx]  # between two clearly in-body, or two out-of-body, samples: settled
            else:
                reader.add(fidx, held.pop(fidx))
        learn()

    def take(fidx: int, start: int, frame: av.VideoFrame) -> None:
        if fidx in known:
            return
        if (fidx - start) % step == 0 or fidx in always:
            reader.add(fidx, frame)
        else:
            held[fidx] = frame
    with open_input(path) as container:
        stream = _video_stream(container, path)
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = settings.threads
        stream.codec_context.options = _decoder_options(settings)
        for (start, end), oob_from, inbody_from in zip(plan.ranges, plan.stop_at_oob_from,
                                                        plan.stop_at_inbody_from, strict=True):
            wanted = end - start
            seen: set[int] = set()
            checked = len(reader.scored_values)
            zone = min((z for z in (oob_from, inbody_from) if z is not None), default=None)

            def may_stop(oob_from: int | None = oob_from, inbody_from: int | None = inbody_from) -> bool:
                """Score what is queued; tell whether the rest of the range is settled without decoding."""
                nonlocal checked
                settle_held(final=False)
                keys, values = reader.scored_keys[checked:], reader.scored_values[checked:]
                checked = len(reader.scored_values)
                if oob_from is not None and any(k >= oob_from and v >= enter_threshold
                                                for k, v in zip(keys, values, strict=True)):
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
                    take(fidx, start, frame)
                    reader.report("refine", done, total, "frames")
                    if (zone is not None and fidx >= zone and len(reader.pending) * step >= STOP_CHECK_BATCH
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
                        take(fidx, start, frame)
            settle_held(final=True)  # whichever way the range ended: nothing stays held across ranges
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
