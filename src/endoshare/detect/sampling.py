"""Reading a video for detection: the packet index with keyframe scores, GOP refinement, sequential scans.

Frame indices are presentation order over the frames a full decode displays, counted from 0.  The
packet index gets them without decoding: every displayed packet (not hidden by an edit list) is one
frame, and its rank by presentation timestamp is its index.  Decoded frames are mapped back to an
index through their ``pts``.  Which GOPs need every frame decoded is decided in :mod:`.cues`.
"""

from __future__ import annotations

import bisect
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

from ..errors import CancelledError, UnreadableMediaError
from ..media.keyframes import KeyframeReader, damaged, decode_packet, decoder_options, video_stream
from ..media.probe import iter_video_packets, open_input, stream_frame_rate
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
    #: Decoder threads of the refinement, sequential and ``coarse_frames="reference"`` passes (0 = FFmpeg
    #: decides; a frame-threaded decoder keeps both cores busy).  The keyframe pass has a decoder per core.
    threads: int = 0
    #: swscale threads for the shrink: one, because the output is tiny and the decoder threads already
    #: use the cores (slice threads here cost ~15 % more CPU and 2-3x the wall time per frame).
    scale_threads: int = 1
    #: Coarse-to-fine only: skip the in-loop deblocking filter when decoding for the detector (~20 % less
    #: decoder CPU on 1080p H.264).  Block edges it would smooth vanish when a frame is squashed to the
    #: model's 128 pixels: built-in scores move by < 0.01 (tests/test_detect_video.py pins the tolerance).
    #: The sequential scan always decodes exactly, as a stateful detector was trained.
    skip_loop_filter: bool = True
    #: Coarse-to-fine refine: decode the reference pictures of a refined range only (FFmpeg ``skip_frame =
    #: NONREF``), plus its size-spike frames; the disposable B-frames between them (half the frames of a
    #: usual H.264 stream, about a third of its decoding) are decoded later only where a boundary needs them.
    refine_references_first: bool = True
    #: Coarse-to-fine refine: at least one decoded frame out of this many is scored (the grid), and every
    #: size-spike frame; between two grid samples that disagree (or are uncertain) the decoded frames are
    #: bisected down to neighbours, so boundaries stay exact.  Frames between two samples that agree take
    #: their side in the smoothing, as the frames of an unflagged GOP do: an excursion this long or longer
    #: inside a refined GOP always holds a sample, whatever its packet sizes (shorter ones are found by the
    #: size spike at their cut).  On the 1080p benchmark 8 would score 23 frames fewer of 191.
    refine_step: int = 4
    #: Coarse-to-fine refine: a boundary found between two neighbouring decoded frames with at most this
    #: many skipped (non-reference) frames between them, one side out of body, is left there: the smoothing
    #: redacts those frames unseen (a privacy-safe widening of the span).  More frames, or no side out of
    #: body, and they are decoded and scored.  0: every boundary frame-exact.
    refine_widening: int = 2

    def __post_init__(self) -> None:
        for name, least in (("refine_step", 1), ("refine_widening", 0)):
            value: object = getattr(self, name)          # as given, perhaps from JSON
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number of frames >= {least}, got {value!r}")


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


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    rate = stream_frame_rate(stream)
    if rate is not None:
        return rate
    raise UnreadableMediaError(f"{path} does not state a frame rate, so margins in seconds cannot be turned "
                               "into frames; remux it (e.g. ffmpeg -i IN -c copy -r 25 OUT.mp4).", path=path)


def _packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             path: Path) -> Iterator[av.Packet]:
    try:
        yield from iter_video_packets(container, stream)
    except av.error.FFmpegError as exc:
        raise damaged(path, exc) from None


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


class _PacketLog:
    """What the coarse pass keeps of every displayed packet (decode order), with progress and cancel checks."""

    def __init__(self, reader: _Reader, total: int | None) -> None:
        self.reader = reader
        self.total = total
        self.pts: list[int] = []
        self.sizes: list[int] = []
        self.keys: list[bool] = []

    def __call__(self, packet: av.Packet) -> None:
        if packet.pts is None:
            raise PtsUnusableError(str(self.reader.path))
        self.pts.append(int(packet.pts))
        self.sizes.append(int(packet.size))
        self.keys.append(bool(packet.is_keyframe))
        done = len(self.pts)
        self.reader.report("index", done, self.total, "packets")
        if done % PROGRESS_EVERY == 0:
            self.reader.check_cancel()


def coarse_scan(path: Path, detector: Detector, settings: ReadSettings,
                progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
                frames: str = "keyframes", sink: KeyframeSink | None = None) -> CoarseScan:
    """Demux every packet of the video stream; decode and score the keyframes only (on every core, see
    :mod:`~endoshare.media.keyframes`), or (``frames="reference"``) every picture that others are predicted
    from (all but the disposable B-frames).

    With keyframes only, each decoded keyframe also goes to ``sink``, and ``sink.scanned`` is called once
    the scan completed (not when it fails half-way).
    """
    if frames not in COARSE_FRAMES:
        raise ValueError(f"coarse frames must be one of {', '.join(COARSE_FRAMES)}, got {frames!r}")
    every_reference = frames == "reference"
    sink = None if every_reference else sink
    reader = _Reader(path, detector, settings, progress, cancel)
    with KeyframeReader(path, skip_loop_filter=settings.skip_loop_filter, every_reference=every_reference,
                        threads=settings.threads) as pictures:
        rate = _frame_rate(pictures.stream, path)
        log = pictures.on_packet = _PacketLog(reader, int(pictures.stream.frames) or None)
        for pts, frame in pictures:
            reader.add(pts, frame)
            if sink is not None:
                sink.keyframe(pts, frame)
        reader.flush()
        reader.frames_decoded = pictures.frames_decoded
        reader.report("index", len(log.pts), len(log.pts), "packets", force=True)
    if len(set(log.pts)) != len(log.pts):
        raise PtsUnusableError(str(path))
    index = PacketIndex.from_decode_order(log.pts, log.sizes, log.keys)
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
# Refining the planned ranges


@dataclass(frozen=True)
class ScoredFrames:
    frames: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    frames_decoded: int


#: Decoded frames of a range held unscored (full size) at most before the samples so far are settled: bounds
#: memory (16 frames of 1080p yuv420p are about 50 MB).
MAX_HELD_FRAMES = 16
#: Rounds of exact decoding per range at most (each new sample's neighbouring gaps may need another).
EXACT_ROUNDS = 4


class _Range:
    """What one planned range has decoded so far: frames in presentation order, and the unscored ones."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.decoded: list[int] = []          # ascending frame indices of every decoded frame of the range
        self.decoded_set: set[int] = set()
        self.held: dict[int, av.VideoFrame] = {}  # decoded, not scored, not yet settled
        self.queued: set[int] = set()         # held frames chosen for the model at the next settling
        self.last_chosen = start - 1          # the latest frame scored or chosen (grid anchor)
        self.settled_upto = start             # samples before this are settled (bisected and gap-checked)
        self.needed: set[int] = set()         # undecoded frames that must be decoded and scored after all


class _Refiner:
    """Scores the frames of the planned ranges that decide the spans, decoding and scoring as few as it can.

    Per range (see ReadSettings for the knobs and docs/detection.md for the reasoning):

    1. **Decode the reference pictures** (FFmpeg ``skip_frame = NONREF``; a size-spike frame is decoded
       even if no other picture refers to it).  Disposable B-frames — half the frames of a usual H.264
       stream, and a third of its decoding — are skipped: nothing else is predicted from them.
    2. **Score a grid**: at least one decoded frame every ``refine_step`` frames, and every size spike.
    3. **Bisect**: between two consecutive scored frames that disagree (or are uncertain), score the decoded
       frame in the middle, until the two are neighbours among the decoded frames.  Between two samples that
       agree (both clearly in body, or both out of body), the frames take their side, as in an unflagged GOP.
    4. **Gaps**: a boundary between two neighbouring decoded frames may still hide skipped frames between
       them.  When one side is out of body and at most ``refine_widening`` frames lie between, they are left
       unscored: the smoothing redacts frames next to an out-of-body sample (a privacy-safe widening).
       Otherwise (more frames, or an uncertain side) they are decoded and scored after all (step 5).
    5. **Exact pass**: seek back and decode just those frames (reference pictures up to them, then them),
       and check the gaps next to the new samples in turn.

    A range ends early, when the plan allows it, at the first frame scoring ``>= enter`` from
    :attr:`RefinePlan.stop_at_oob_from` or once the latest sample, at or after
    :attr:`RefinePlan.stop_at_inbody_from`, is below ``suspect`` (the rest is settled by the samples around it).
    """

    def __init__(self, reader: _Reader, index: PacketIndex, container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream, enter: float, suspect: float, known: dict[int, float],
                 always: frozenset[int], total: int, every_frame: bool) -> None:
        self.reader, self.index, self.container, self.stream = reader, index, container, stream
        settings = reader.settings
        #: A plan that must look at every frame (a very short video): everything decoded, everything scored.
        self.references_first = settings.refine_references_first and not every_frame
        self.step = 1 if every_frame else settings.refine_step
        self.widening = 0 if every_frame else settings.refine_widening
        self.enter, self.suspect = enter, suspect
        self.scores = dict(known)
        self.always = always
        self.keyframes = index.keyframe_indices
        #: Position of each frame's packet in decode order.
        self.decode_position = np.argsort(index.decode_order)
        self.total = total
        self.done = 0
        self._merged = 0

    # -- scores

    def _value(self, frame: int) -> float:
        score = self.scores[frame]
        return 1.0 if score != score else score   # NaN: out of body, as the smoothing counts it

    def _settled(self, left: int, right: int) -> bool:
        """Both samples clearly in body, or both out of body: the frames between take their side."""
        a, b = self._value(left), self._value(right)
        return (a < self.suspect and b < self.suspect) or (a >= self.enter and b >= self.enter)

    def _score(self, frames: dict[int, av.VideoFrame]) -> None:
        for fidx in sorted(frames):
            self.reader.add(fidx, frames[fidx])
        self.reader.flush()
        keys, values = self.reader.scored_keys, self.reader.scored_values
        self.scores.update(zip(keys[self._merged:], values[self._merged:], strict=True))
        self._merged = len(keys)

    # -- decoding

    def _decoded(self, first: int, end: int, also: set[int] | frozenset[int] | None
                 ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Frames of ``[first, end)`` in the order the decoder outputs them (presentation order), decoding
        from the keyframe at or before ``first``.  ``also`` None: every picture; otherwise reference
        pictures only, plus the frames in ``also``."""
        index, stream = self.index, self.stream
        context = stream.codec_context
        context.skip_frame = "NONE"
        # Once the last packet (in decode order) of a frame of the range is sent, the decoder is drained
        # rather than fed the next GOP's keyframe: an open GOP's leading frames, shown before ``end`` but
        # decoded after the next keyframe, are among those packets.
        last_packet = int(self.decode_position[first:end].max()) if end > first else -1
        keyframes_past_end = 0
        for packet in self._packets_from_keyframe(first):
            self.reader.check_cancel()
            idx = index.index_of_pts(packet.pts)
            if packet.is_keyframe and idx is not None and idx >= end:
                keyframes_past_end += 1
                if keyframes_past_end >= 2:
                    return   # a damaged stream: two keyframes past the range nothing of it can follow
            if also is not None:
                # Set per packet: FFmpeg reads it when the packet is submitted (the caller checks that what
                # it asked for came out, and decodes everything when it did not).
                context.skip_frame = "NONE" if idx in also else "NONREF"
            yield from self._output(decode_packet(stream.codec_context, packet, self.reader.path), first, end)
            if idx is not None and int(self.decode_position[idx]) >= last_packet:
                break
        yield from self._output(decode_packet(stream.codec_context, None, self.reader.path), first, end)

    def _packets_from_keyframe(self, first: int) -> Iterator[av.Packet]:
        """The packets from the keyframe at or before frame ``first`` on, in decode order.

        A seek asks for that keyframe, but demuxers that seek by byte position and timestamps (MPEG-TS and
        MPEG-PS) can land just after it, and a decoder given no keyframe outputs nothing: the range would
        then be redacted unseen.  So the packets before the keyframe are skipped, and a seek that landed past
        it is retried from the keyframe before, then from the start of the file."""
        position = int(np.searchsorted(self.keyframes, first, side="right")) - 1
        if position < 0:
            targets: list[int | None] = [None]      # no keyframe before ``first``: from the start of the file
            key = None
        else:
            key = int(self.keyframes[position])
            targets = [int(self.index.pts[key])]
            if position > 0:
                targets.append(int(self.index.pts[self.keyframes[position - 1]]))
            targets.append(None)
        for target in targets:
            try:
                if target is None:
                    self.container.seek(0, backward=True, any_frame=False)
                else:
                    self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise damaged(self.reader.path, exc) from None
            packets = _packets(self.container, self.stream, self.reader.path)
            if key is None:
                yield from packets
                return
            for packet in packets:
                idx = self.index.index_of_pts(packet.pts)
                if idx == key:
                    yield packet
                    yield from packets
                    return
                if idx is not None and self.decode_position[idx] > self.decode_position[key]:
                    break                   # landed past the keyframe: seek again, earlier
            else:
                return                      # the keyframe never came (a damaged file): nothing to decode

    def _output(self, frames: list[av.VideoFrame], first: int, end: int) -> Iterator[tuple[int, av.VideoFrame]]:
        for frame in frames:
            self.reader.frames_decoded += 1
            fidx = self.index.index_of_pts(frame.pts)
            if fidx is not None and first <= fidx < end:
                yield fidx, frame

    # -- one range

    def refine(self, start: int, end: int, oob_from: int | None, inbody_from: int | None) -> None:
        rng = _Range(start, end)
        zone = min((z for z in (oob_from, inbody_from) if z is not None), default=None)
        also = self.always if self.references_first else None
        stopped = False
        for fidx, frame in self._decoded(start, end, also):
            if fidx in rng.decoded_set:
                continue
            self._take(rng, fidx, frame)
            self.reader.report("refine", self.done + fidx - start + 1, self.total, "frames")
            if zone is not None and fidx >= zone and rng.queued:
                self._settle(rng)
                if self._may_stop(rng, oob_from, inbody_from):
                    stopped = True
                    break
            elif len(rng.held) >= MAX_HELD_FRAMES:
                self._settle(rng)
        if not stopped:
            if rng.held and rng.decoded[-1] in rng.held:
                rng.queued.add(rng.decoded[-1])    # the last decoded frame closes the range's samples
            self._settle(rng)
            self._check_tail(rng)
        # A size spike must be looked at even when its decoding was not granted as asked.
        last = rng.settled_upto if stopped else end
        rng.needed.update(f for f in self.always if start <= f < last and f not in rng.decoded_set)
        if rng.needed:
            self._decode_exactly(rng, None if stopped else end)
        self.done += end - start

    def _take(self, rng: _Range, fidx: int, frame: av.VideoFrame) -> None:
        """Record a decoded frame; choose it (or the one decoded before it) for the grid when due."""
        if rng.decoded and fidx < rng.decoded[-1]:
            bisect.insort(rng.decoded, fidx)        # out of order (a damaged stream): kept, bisected, not gridded
            rng.decoded_set.add(fidx)
            if fidx not in self.scores:
                rng.held[fidx] = frame
            return
        previous = rng.decoded[-1] if rng.decoded else None
        rng.decoded.append(fidx)
        rng.decoded_set.add(fidx)
        step = self.step
        if previous is not None and fidx - rng.last_chosen > step and previous > rng.last_chosen \
                and previous in rng.held:
            rng.queued.add(previous)                # the latest frame that keeps the grid within the step
            rng.last_chosen = previous
        if fidx in self.scores:                     # a keyframe the coarse pass scored: a free sample
            rng.last_chosen = fidx
            return
        rng.held[fidx] = frame
        if fidx - rng.last_chosen >= step or fidx in self.always:
            rng.queued.add(fidx)
            rng.last_chosen = fidx

    def _samples(self, rng: _Range) -> list[int]:
        """Scored decoded frames of the range from ``settled_upto`` on, ascending."""
        lo = bisect.bisect_left(rng.decoded, rng.settled_upto)
        return [f for f in rng.decoded[lo:] if f in self.scores]

    def _settle(self, rng: _Range) -> None:
        """Score the chosen frames, bisect every unsettled pair of samples, check the gaps between them."""
        self._score({f: rng.held.pop(f) for f in sorted(rng.queued) if f in rng.held})
        rng.queued.clear()
        while True:
            samples = self._samples(rng)
            middles: dict[int, av.VideoFrame] = {}
            for left, right in zip(samples, samples[1:], strict=False):
                if self._settled(left, right):
                    continue
                between = [f for f in rng.held if left < f < right]
                if between:
                    middle = sorted(between)[len(between) // 2]
                    middles[middle] = rng.held.pop(middle)
            if not middles:
                break
            self._score(middles)
        if not samples:
            return
        for left, right in zip(samples, samples[1:], strict=False):
            self._check_gap(rng, left, right)
        last = samples[-1]
        for fidx in [f for f in rng.held if f < last]:
            del rng.held[fidx]                      # settled: between two samples that agree
        rng.settled_upto = last

    def _check_gap(self, rng: _Range, left: int, right: int) -> None:
        """Frames between two neighbouring samples that were not decoded: trusted, redacted unseen, or needed."""
        if right - left <= 1:
            return
        if self._settled(left, right):
            rng.needed.update(f for f in range(left + 1, right) if f in self.always and f not in rng.decoded_set)
            # Reference pictures further apart than the grid step (4+ B-frames in a row, or pictures coded
            # as non-reference throughout): frames on the grid are decoded after all, so that an excursion
            # of ``refine_step`` frames still holds a sample.
            rng.needed.update(f for f in range(left + self.step, right, self.step) if f not in rng.decoded_set)
            return
        # Unsettled after bisection: nothing decoded lies between them.
        next_to_oob = max(self._value(left), self._value(right)) >= self.enter
        if next_to_oob and right - left - 1 <= self.widening:
            return   # next to an out-of-body sample: the smoothing redacts them (privacy-safe widening)
        rng.needed.update(range(left + 1, right))

    def _check_tail(self, rng: _Range) -> None:
        """Frames after the range's last sample, up to the keyframe that ends it (or the end of the video)."""
        if not rng.decoded or rng.settled_upto not in self.scores:
            return
        last = rng.settled_upto
        if rng.end in self.scores:
            self._check_gap(rng, last, rng.end)
        elif rng.end - last > 1 and self._value(last) < self.enter:
            # No sample after them (the video ends, or its keyframe could not be scored): look at them.
            rng.needed.update(f for f in range(last + 1, rng.end) if f not in rng.decoded_set)

    def _may_stop(self, rng: _Range, oob_from: int | None, inbody_from: int | None) -> bool:
        """After settling: is the rest of the range decided by the samples around it?"""
        samples = self._samples(rng)
        if oob_from is not None:
            lo = bisect.bisect_left(rng.decoded, oob_from)
            if any(f in self.scores and self._value(f) >= self.enter for f in rng.decoded[lo:]):
                return True
        if inbody_from is not None and samples:
            latest = samples[-1]
            return latest >= inbody_from and self._value(latest) < self.suspect
        return False

    def _decode_exactly(self, rng: _Range, right: int | None) -> None:
        """Decode and score the frames the range still needs (see _check_gap): reference pictures up to them
        and then them, or, for any that did not come out so, every picture.  A new sample can show a
        boundary between skipped frames next to it: the gaps around new samples are checked in turn, for a
        few rounds at most; ``right`` is the sample that closes the range (None when it stopped early)."""
        for _ in range(EXACT_ROUNDS):
            remaining = {f for f in rng.needed if f not in self.scores}
            rng.needed.clear()
            if not remaining:
                return
            new: set[int] = set()
            for also in (set(remaining), None) if self.references_first else (None,):
                if not remaining:
                    break
                gop = int(np.searchsorted(self.keyframes, min(remaining), side="right")) - 1
                first = int(self.keyframes[gop]) if gop >= 0 else 0
                got: dict[int, av.VideoFrame] = {}
                for fidx, frame in self._decoded(first, max(remaining) + 1, also):
                    if fidx in remaining:
                        got[fidx] = frame
                        remaining.discard(fidx)
                        if not remaining:
                            break
                self._score(got)
                new.update(got)
            # Frames that no decode yields (damaged) stay unsampled and are labelled by the smoothing.
            for fidx in new - rng.decoded_set:
                bisect.insort(rng.decoded, fidx)
                rng.decoded_set.add(fidx)
            samples = [f for f in rng.decoded if f in self.scores]
            if right is not None and right in self.scores:
                samples.append(right)
            for left, after in zip(samples, samples[1:], strict=False):
                if left in new or after in new:
                    self._check_gap(rng, left, after)


def score_ranges(path: Path, index: PacketIndex, plan: RefinePlan, detector: Detector, settings: ReadSettings,
                 enter_threshold: float, suspect_threshold: float, progress: ProgressCallback | None = None,
                 cancel: CancelCallback | None = None, known: dict[int, float] | None = None,
                 always: frozenset[int] = frozenset()) -> ScoredFrames:
    """Score the frames of each planned range that decide where spans begin and end (see :class:`_Refiner`);
    ``known`` holds the scores of the coarse pass (frame -> score), ``always`` the frames that must be
    scored if decoded (size spikes)."""
    reader = _Reader(path, detector, settings, progress, cancel)
    with open_input(path) as container:
        stream = video_stream(container, path)
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = settings.threads
        stream.codec_context.options = decoder_options(settings.skip_loop_filter)
        refiner = _Refiner(reader, index, container, stream, enter_threshold, suspect_threshold, known or {},
                           always, plan.frames, plan.every_frame)
        for (start, end), oob_from, inbody_from in zip(plan.ranges, plan.stop_at_oob_from,
                                                        plan.stop_at_inbody_from, strict=True):
            refiner.refine(start, end, oob_from, inbody_from)
        reader.flush()
        reader.report("refine", refiner.done, plan.frames, "frames", force=True)
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
        stream = video_stream(container, path)
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
            take(decode_packet(stream.codec_context, packet, path))
        take(decode_packet(stream.codec_context, None, path))
        reader.frames_decoded = count
        reader.flush()
        reader.report("sequential", count, count, "frames", force=True)
    return SequentialScan(frame_count=count, frame_rate=rate,
                          frames=np.asarray(reader.scored_keys, dtype=np.int64),
                          scores=np.asarray(reader.scored_values, dtype=np.float32), frames_decoded=count)
