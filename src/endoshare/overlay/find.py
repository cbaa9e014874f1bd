"""Find a case's burned-in text: sample keyframes sparsely and at scene cuts, detect text, and tell
recorder overlays (same place in several samples) from text that moves with the scene.

Cost control: only keyframes are decoded (one seek and one picture each), at most one per
``interval_seconds`` plus the keyframes an encoder inserted out of its regular cadence (scene cuts),
at most ``max_samples_per_clip`` per clip.  Each clip is read on its own, so a clip with another
layout gets its own regions.

A text box whose strokes stay put between a sample and the frame half a second later is burned into
the picture (the scene behind it moves); its region (the union of its sightings, plus a margin) is
masked from the sample before it was first seen to the sample after it was last seen, or to the
clip's ends.  Text that moves with the scene (an instrument's print, a ruler, or a false detection in
the tissue) is reported as "transient" and left alone.  Recognition only labels regions for the
report; it never unmasks anything, except device settings when the user asks to keep them.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import CancelledError, UnreadableMediaError
from ..media.frames import normalise
from ..media.join import ClipPlan, JoinPlan, VideoFormat
from ..media.probe import open_input
from .regions import OverlayRegion, OverlaySet
from .text import Box, TextDetector, classify, detector_size, only_device_settings

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class OverlayOptions:
    #: Leave regions whose every reading is device settings only (pressures, light, gain) visible.
    keep_device_settings: bool = False
    #: At least one sample per this many seconds of video (keyframes nearest to the grid).
    interval_seconds: Fraction = Fraction(120)
    max_samples_per_clip: int = 24
    #: A mask is the text box grown by this share of its height above and below (at least 4 pixels)...
    margin_share: float = 0.35
    #: ... and by this share of its height left and right: faint characters at the ends of a line are
    #: what the detector misses first (seen on real recorder text over bright tissue).
    margin_share_x: float = 1.0
    #: Longest side the detector sees (pixels).
    detector_long_side: int = 960
    #: Each sample is compared with the frame this much later to tell standing text from moving text.
    still_seconds: Fraction = Fraction(1, 2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval_seconds", Fraction(self.interval_seconds))
        if self.interval_seconds <= 0 or self.max_samples_per_clip < 2:
            raise ValueError("overlay sampling needs a positive interval and at least 2 samples per clip")


#: A text box whose strokes correlate at least this well between a sample and a frame ~half a second
#: later stands still on the screen (cosine similarity of the luma gradient magnitudes).  Measured:
#: burned-in text 0.97-1.00 (opaque, on plates, half transparent over tissue, with sensor noise); false
#: detections on slowly moving tissue 0.10-0.82; a "14:23:09" clock turning to "14:23:10" 0.87-0.90.
STILL_SIMILARITY = 0.85
#: A "text line" taller than this share of the picture is a texture, not an overlay (recorder text
#: lines are 2-6 % of the height; a block of a few stacked lines stays well below).
MAX_LINE_SHARE = 0.2


def stroke_similarity(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """How alike the strokes of two BGR crops of one box are: 1 for the same picture, near 0 for
    unrelated ones; a burned-in overlay keeps its strokes while the scene behind it changes."""
    def strokes(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        grey = image.astype(np.float32).mean(axis=2)
        return np.abs(np.diff(grey, axis=1))[:-1] + np.abs(np.diff(grey, axis=0))[:, :-1]
    sa, sb = strokes(a), strokes(b)
    norm = float(np.sqrt((sa * sa).sum() * (sb * sb).sum()))
    return float((sa * sb).sum()) / norm if norm > 0 else 1.0


@dataclass
class _Cluster:
    box: Box
    height: int
    samples: set[int] = field(default_factory=set)
    #: Samples where the box's strokes stood still against a frame shortly after.
    still: set[int] = field(default_factory=set)
    crops: list[npt.NDArray[np.uint8]] = field(default_factory=list)

    def matches(self, box: Box) -> bool:
        inter = self.box.intersection(box)
        return (inter >= 0.5 * min(self.box.area, box.area)
                and 0.6 <= box.height / max(1, self.height) <= 1.6)


def keyframe_positions(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       path: object) -> tuple[list[int], list[int]]:
    """(display index, pts) of every keyframe of ``stream``, from the packets alone (no decoding)."""
    pts_all: list[int] = []
    key_pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            pts_all.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
    except av.error.FFmpegError as exc:
        raise UnreadableMediaError(f"{path} cannot be read to the end ({exc}); the recording is damaged: copy "
                                   "it again or remove it from the case.", path=str(path)) from None
    pts_all.sort()
    key_pts.sort()
    if pts_all and not key_pts:
        key_pts = [pts_all[0]]      # no packet flagged as a keyframe: read from the start at least
    return [bisect.bisect_left(pts_all, p) for p in key_pts], key_pts


def choose_samples(key_index: list[int], frames: int, rate: Fraction, options: OverlayOptions) -> list[int]:
    """Positions (into ``key_index``) of the keyframes to read: the first and last, one near every
    interval, and every keyframe that comes earlier than the encoder's regular cadence (a scene cut)."""
    if not key_index:
        return []
    chosen = {0, len(key_index) - 1}
    step = max(1, int(options.interval_seconds * rate))
    for grid in range(0, frames, step):
        chosen.add(max(0, bisect.bisect_right(key_index, grid) - 1))
    if len(key_index) > 2:
        gaps = np.diff(np.asarray(key_index))
        cadence = float(np.median(gaps))
        chosen.update(int(n) + 1 for n in np.flatnonzero(gaps < 0.8 * cadence))
    ordered = sorted(chosen)
    if len(ordered) > options.max_samples_per_clip:
        picks = np.linspace(0, len(ordered) - 1, options.max_samples_per_clip).round().astype(int)
        ordered = [ordered[i] for i in sorted(set(picks.tolist()))]
    return ordered


def timeline_offset(clip: ClipPlan, source_index: int) -> int:
    """First offset into the clip's timeline frames that shows source frame ``source_index``."""
    offset = math.ceil(Fraction(source_index) * clip.target_rate / clip.source_rate)
    return max(0, min(clip.timeline_frames - 1, offset))


class OverlayFinder:
    """Reads sampled frames of each clip and turns their text boxes into :class:`OverlayRegion` values."""

    def __init__(self, plan: JoinPlan, options: OverlayOptions, detector: TextDetector | None = None,
                 progress: Progress | None = None, cancel: Cancel | None = None) -> None:
        self.plan = plan
        self.options = options
        self.detector = detector or TextDetector()
        self.progress = progress
        self.cancel = cancel
        self.det_size = detector_size(plan.target.width, plan.target.height, options.detector_long_side)

    def run(self) -> OverlaySet:
        regions: list[OverlayRegion] = []
        samples: list[int] = []
        for number, clip in enumerate(self.plan.clips):
            clip_regions, clip_samples = self.clip(clip)
            regions.extend(clip_regions)
            samples.extend(clip_samples)
            if self.progress is not None:
                self.progress(number + 1, len(self.plan.clips))
        return OverlaySet.of(regions, samples)

    def detect(self, frame: av.VideoFrame) -> tuple[npt.NDArray[np.uint8], list[Box], list[Box]]:
        """(detector picture, boxes in its pixels, boxes in timeline pixels) of one timeline frame."""
        width, height = self.det_size
        fmt: VideoFormat = self.plan.target
        picture = normalise(frame, fmt).reformat(width=width, height=height, format="bgr24",
                                                 interpolation="AREA").to_ndarray()
        small = self.detector.boxes(picture)
        sx, sy = fmt.width / width, fmt.height / height
        big = [Box(math.floor(b.x0 * sx), math.floor(b.y0 * sy), min(fmt.width, math.ceil(b.x1 * sx)),
                   min(fmt.height, math.ceil(b.y1 * sy))) for b in small]
        return picture, small, big

    def clip(self, clip: ClipPlan) -> tuple[list[OverlayRegion], list[int]]:
        path = clip.info.path
        partner_gap = max(2, round(self.options.still_seconds * clip.source_rate))  # frames
        with open_input(path) as container:
            stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
            key_index, key_pts = keyframe_positions(container, stream, path)
            chosen = choose_samples(key_index, clip.source_frames, clip.source_rate, self.options)
            stream.thread_type = "AUTO"
            # Pictures nothing refers to are not decoded: the keyframe and the partner need none of them.
            stream.codec_context.skip_frame = "NONREF"
            gap_ticks = int(Fraction(partner_gap) / clip.source_rate / stream.time_base) if stream.time_base else 0
            times: list[int] = []
            clusters: list[_Cluster] = []
            for sample, position in enumerate(chosen):
                if self.cancel is not None and self.cancel():
                    raise CancelledError("Cancelled by the user; nothing was published.")
                frame, partner = self._decode_at(container, stream, key_pts[position], gap_ticks, path)
                if frame is None and stream.codec_context.skip_frame != "DEFAULT":
                    # A decoder that counts every picture as unreferenced (some intra-only formats).
                    stream.codec_context.skip_frame = "DEFAULT"
                    frame, partner = self._decode_at(container, stream, key_pts[position], gap_ticks, path)
                times.append(clip.timeline_start + timeline_offset(clip, key_index[position]))
                if frame is None:
                    continue
                picture, small, big = self.detect(frame)
                later = self._picture(partner) if partner is not None else None
                for det_box, box in zip(small, big):
                    if box.height > MAX_LINE_SHARE * self.plan.target.height:
                        continue        # not a line of text: a texture the detector took for a text block
                    cluster = next((c for c in clusters if c.matches(box)), None)
                    if cluster is None:
                        cluster = _Cluster(box, box.height)
                        clusters.append(cluster)
                    cluster.box = cluster.box.union(box)
                    cluster.samples.add(sample)
                    crop = picture[det_box.y0:det_box.y1, det_box.x0:det_box.x1]
                    # No later frame to compare with (a clip this short): in doubt, it stands still.
                    if later is None or stroke_similarity(
                            crop, later[det_box.y0:det_box.y1, det_box.x0:det_box.x1]) >= STILL_SIMILARITY:
                        cluster.still.add(sample)
                    # One reading per region (recognition costs as much as detection): the latest.
                    cluster.crops = [crop]
        still = [c for c in clusters if c.still]
        # Transient text is not masked, so what it says changes nothing: only overlays are read.
        readings = dict(zip(map(id, still), self.detector.read_many([c.crops[-1] for c in still]))) if still else {}
        return [self._region(c, times, clip, readings.get(id(c))) for c in clusters], times

    def _picture(self, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
        width, height = self.det_size
        return normalise(frame, self.plan.target).reformat(width=width, height=height, format="bgr24",
                                                           interpolation="AREA").to_ndarray()

    def _decode_at(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, pts: int,
                   gap_ticks: int, path: object) -> tuple[av.VideoFrame | None, av.VideoFrame | None]:
        """The keyframe at ``pts`` and the first decoded frame at least ``gap_ticks`` after it (or the
        last one before the stream ends; None when the keyframe is the last frame decoded)."""
        frame = partner = None
        try:
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            for decoded in container.decode(stream):
                if decoded.pts is None or decoded.pts < pts:
                    continue
                if frame is None:
                    frame = decoded
                    continue
                partner = decoded
                if decoded.pts >= pts + gap_ticks:
                    break
        except av.error.FFmpegError as exc:
            raise UnreadableMediaError(f"{path} cannot be decoded near timestamp {pts} ({exc}); the recording is "
                                       "damaged: copy it again or remove it from the case.", path=str(path)) from None
        return frame, partner

    def _region(self, cluster: _Cluster, times: list[int], clip: ClipPlan,
                reading: tuple[str, float] | None) -> OverlayRegion:
        first, last = min(cluster.samples), max(cluster.samples)
        clip_end = clip.timeline_start + clip.timeline_frames
        start = clip.timeline_start if first == 0 else times[first - 1] + 1
        end = clip_end if last == len(times) - 1 else times[last + 1]
        kind = "overlay" if cluster.still else "transient"
        readings = [reading] if reading is not None else []
        labels = sorted({label for text, _ in readings for label in classify(text)})
        keep_settings = (self.options.keep_device_settings and bool(readings)
                         and all(only_device_settings(text, confidence) for text, confidence in readings))
        fmt = self.plan.target
        margin = max(4, math.ceil(self.options.margin_share * cluster.height))
        margin_x = max(4, math.ceil(self.options.margin_share_x * cluster.height))
        return OverlayRegion(cluster.box.grown(margin_x, fmt.width, fmt.height, margin), start, end, kind,
                             tuple(labels),
                             masked=kind == "overlay" and not keep_settings,
                             seen_at=tuple(times[s] for s in sorted(cluster.samples)))


def find_overlays(plan: JoinPlan, options: OverlayOptions = OverlayOptions(), progress: Progress | None = None,
                  cancel: Cancel | None = None, detector: TextDetector | None = None) -> OverlaySet:
    """The burned-in text regions of a case (see the module doc)."""
    return OverlayFinder(plan, options, detector, progress, cancel).run()
