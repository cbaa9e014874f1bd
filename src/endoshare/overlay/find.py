"""Find a case's burned-in text cheaply: look for picture detail that stands still while the scene
moves, and run the text detector only there.

Cost control (text detection must stay a small share of out-of-body detection): in each clip only
keyframes are decoded (one seek and one picture each), one at least every ``interval_seconds`` plus
the keyframes an encoder inserted out of its regular cadence (scene cuts), at most
``max_samples_per_clip``.  Each sampled keyframe is compared with the previous one (a "pair"): the
pixels that are an edge in both pictures and did not change are the **still map** of the pair.  While
the scene moves, the still map holds the burned-in text (and other fixed furniture: the scope's rim, a
black border); tissue that moved leaves nothing in it.  The text detector runs only on the parts of
the still areas that stood still in two pairs running (three probes; a clip of two probes: its one
pair) and that it has not read yet, each cropped from the full picture at its native scale (so a small
overlay costs a few milliseconds, and small text is not shrunk away), or the whole picture shrunk to
``detector_long_side`` when that is cheaper.

A text box found this way is an overlay in every pair where its strokes are there (their strength at
least half of what it was where found) and stand still (:data:`STILL_SIMILARITY`, or
:data:`DOUBT_SIMILARITY` for a box that reads as text), so a banner that appears for part of a clip
gets a span of its own.  It is masked from the probe before it was first seen standing to the probe
after it was last seen (to the clip's ends when it was seen at them): when in doubt, mask.  Text that
moves with the scene (an instrument's print, a ruler) never stands still and is left alone; a box the
size of one character that reads as at most one character (a specular highlight) is not text.
Otherwise recognition only labels regions for the report, and unmasks device settings only when the
user asks to keep them.
A clip with a single decodable keyframe is compared with the frame ``still_seconds`` after it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import UnreadableMediaError
from ..media.frames import normalise, picture_array, uint8_array
from ..media.join import ClipPlan, JoinPlan
from ..media.probe import open_input
from ..types import Cancel, Progress, check_cancelled
from .mask import yuv_planes
from .regions import OverlayRegion, OverlaySet
from .text import Box, TextDetector, classify, detector_size, only_device_settings


@dataclass(frozen=True)
class OverlayOptions:
    #: Leave regions whose every reading is device settings only (pressures, light, gain) visible.
    keep_device_settings: bool = False
    #: At least one sampled keyframe per this many seconds of video (keyframes nearest to the grid).
    interval_seconds: Fraction = Fraction(10)
    max_samples_per_clip: int = 48
    #: A mask is the text box grown by this share of its height above and below (at least 4 pixels)...
    margin_share: float = 0.35
    #: ... and by this share of its height left and right: faint characters at the ends of a line are
    #: what the detector misses first (seen on real recorder text over bright tissue).
    margin_share_x: float = 1.0
    #: Longest side the detector sees when a whole picture (or a large still area) is read.
    detector_long_side: int = 960
    #: A clip with a single keyframe is compared with the frame this much later.
    still_seconds: Fraction = Fraction(1, 2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval_seconds", Fraction(self.interval_seconds))
        if self.interval_seconds <= 0 or self.max_samples_per_clip < 2:
            raise ValueError("overlay sampling needs a positive interval and at least 2 samples per clip")


#: Still map: a pixel is an edge when its gradient (:func:`edges`, luma and chroma) reaches EDGE in both
#: pictures of a pair, and it is still when no plane changed by more than SAME between them.
EDGE = 24
SAME = 14
#: The still map is summarised in blocks of BLOCK analysis pixels; a block with at least BLOCK_EDGES
#: still pixels is worth reading (text strokes fill a block with dozens).
BLOCK = 8
BLOCK_EDGES = 4
#: Smallest still area worth reading, and fewest blocks in it not read before (see :func:`areas_to_read`).
#: Three blocks are 24 analysis pixels: two characters of the smallest recorder text.
MIN_AREA = 3
MIN_FRESH = 2
#: ... and at least this share of its blocks new: a line read before whose ends flicker in and out of the
#: still map is not read again, while a banner appearing where tissue once stood still is.
FRESH_SHARE = 0.3
#: A still area is read with this many blocks of context left and right (one above and below).
CONTEXT_X = 4
#: A text box stands still in a pair when its strokes in the two pictures correlate at least this well
#: (cosine similarity of the gradient magnitudes, :func:`stroke_similarity`).  Measured (on luma, half a
#: second apart): burned-in text 0.97-1.00 (opaque, on plates, with sensor noise); false detections on
#: slowly moving tissue 0.10-0.82, less further apart; a "14:23:09" clock turning to "14:23:10" 0.87-0.90.
#: Small half-transparent text over tissue that moved for 1 s: 0.6-0.75 (hence DOUBT_SIMILARITY).
STILL_SIMILARITY = 0.85
#: ... and at least this share of its edge pixels must be still (:func:`still_edge_share`), or
#: STILL_EDGES_TEXT for a box that reads as text (see :data:`DOUBT_SIMILARITY`).  Measured: generated
#: overlays 0.11 (14 px text over bright tissue at 1080p, read as text) and 0.14 (half transparent) to
#: 0.99; boxes on moving tissue 0-0.08; a checkerboard whose colours swap (the same edges, every pixel
#: changed; unreadable) 0.08-0.12.
STILL_EDGES = 0.15
STILL_EDGES_TEXT = 0.05
#: In a pair where a box's mean stroke strength is below this share of its strength where it was found,
#: the text is gone (a banner taken off the screen), even if the empty place stands still.
ENERGY_SHARE = 0.5
#: A detected box narrower than this many times its height that reads as less than two letters or
#: digits is a single blob (a specular highlight), not text; see :func:`glyph_like`.
GLYPH_ASPECT = 3
#: Between this and :data:`STILL_SIMILARITY` a box stands still only if it reads as text (at least
#: READABLE_CHARACTERS letters or digits, with READABLE_CONFIDENCE): half-transparent text over moving
#: tissue measured 0.6-0.75, while the detector's false boxes on tissue read as one or two symbols.
#: Recognition adds masks here; the only mask it takes away is a one-character blob (GLYPH_ASPECT).
DOUBT_SIMILARITY = 0.5
READABLE_CHARACTERS = 3
READABLE_CONFIDENCE = 0.75
#: A "text line" taller than this share of the picture is a texture, not an overlay (recorder text
#: lines are 2-6 % of the height; a block of a few stacked lines stays well below).
MAX_LINE_SHARE = 0.2
#: Analysis pictures are about this many lines high (the luma averaged over 2x2, 3x3... pixels).
ANALYSIS_LINES = 540


def analysis_factor(height: int) -> int:
    """Pixels averaged per side for the still map: 1 up to 810 lines, 2 for 1080p, 4 for 2160p."""
    return max(1, round(height / ANALYSIS_LINES))


def analysis_picture(frame: av.VideoFrame, factor: int) -> npt.NDArray[np.uint8]:
    """(h, w, 3) luma and the two chroma planes at 1/``factor`` of the picture's size, averaged over the
    pixels they stand for (which also averages the sensor noise away).  Chroma counts: recorder text is
    often coloured on tissue of about the same brightness (green or yellow on red)."""
    import cv2

    if frame.format.name not in ("yuv420p", "yuvj420p") or frame.width % 2 or frame.height % 2:
        frame = frame.reformat(width=frame.width // 2 * 2, height=frame.height // 2 * 2, format="yuv420p")
    height, width = frame.height, frame.width
    y, u, v = yuv_planes(uint8_array(frame.to_ndarray()), width, height)
    size = (max(1, width // factor), max(1, height // factor))
    planes = [y]
    for chroma in (u, v):
        planes.append(chroma if size == (width // 2, height // 2) else uint8_array(
            cv2.resize(chroma, size, interpolation=cv2.INTER_AREA if factor > 2 else cv2.INTER_NEAREST)))
    if planes[0].shape[::-1] != size:
        planes[0] = uint8_array(cv2.resize(planes[0], size, interpolation=cv2.INTER_AREA))
    return uint8_array(cv2.merge(planes))


#: Weight of a chroma step against a luma step (chroma spans about half the range for the same colours).
CHROMA_WEIGHT = 2.0
_WEIGHTS = np.array([[1.0, CHROMA_WEIGHT, CHROMA_WEIGHT]], np.float32)


def edges(picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """|dx| + |dy| of luma plus :data:`CHROMA_WEIGHT` times that of each chroma plane (saturated at 255)."""
    import cv2

    h, w = picture.shape[:2]
    g = np.zeros((h, w), np.uint8)
    if w > 1:
        g[:, :-1] = cv2.transform(cv2.absdiff(picture[:, 1:], picture[:, :-1]), _WEIGHTS).reshape(h, w - 1)
    if h > 1:
        vertical = cv2.transform(cv2.absdiff(picture[1:], picture[:-1]), _WEIGHTS).reshape(h - 1, w)
        g[:-1, :] = cv2.add(g[:-1, :], vertical)
    return g


def still_map(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], edges_a: npt.NDArray[np.uint8] | None = None,
              edges_b: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.bool_]:
    """Pixels that are an edge in both analysis pictures and did not change between them."""
    import cv2

    ea = edges(a) if edges_a is None else edges_a
    eb = edges(b) if edges_b is None else edges_b
    channels = a.shape[2] if a.ndim == 3 else 1
    same = cv2.inRange(cv2.absdiff(a, b), (0,) * channels, (SAME,) * channels)     # 255 where every plane kept
    return (np.minimum(ea, eb) >= EDGE) & (same > 0)


def still_blocks(still: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Blocks of :data:`BLOCK` pixels holding at least :data:`BLOCK_EDGES` still pixels."""
    h, w = -(-still.shape[0] // BLOCK) * BLOCK, -(-still.shape[1] // BLOCK) * BLOCK
    padded = np.zeros((h, w), bool)
    padded[:still.shape[0], :still.shape[1]] = still
    return np.asarray(padded.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).sum(axis=(1, 3)) >= BLOCK_EDGES, dtype=bool)


def stroke_similarity(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    """How alike the strokes of two crops of one box are (analysis pictures, or grey): 1 for the same picture, near 0
    for unrelated ones; a burned-in overlay keeps its strokes while the scene behind it changes."""
    def strokes(image: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        picture = image.astype(np.float32)
        picture = picture if picture.ndim == 3 else picture[:, :, None]
        weights = _WEIGHTS[0, :picture.shape[2]]
        steps = np.abs(np.diff(picture, axis=1))[:-1] + np.abs(np.diff(picture, axis=0))[:, :-1]
        return np.asarray((steps * weights).sum(axis=2), dtype=np.float32)
    sa, sb = strokes(a), strokes(b)
    norm = float(np.sqrt((sa * sa).sum() * (sb * sb).sum()))
    return float((sa * sb).sum()) / norm if norm > 0 else 1.0


def readable(text: str, confidence: float) -> bool:
    """A recognised line that is text beyond doubt (see :data:`DOUBT_SIMILARITY`)."""
    return confidence >= READABLE_CONFIDENCE and sum(c.isalnum() for c in text) >= READABLE_CHARACTERS


def glyph_like(box: Box, text: str, confidence: float) -> bool:
    """A box the size of one character that reads as at most one character: a specular highlight or a
    blob of tissue, not a line of text (names, dates and IDs are several characters; a wide box that
    reads badly is still treated as text)."""
    return box.width < GLYPH_ASPECT * box.height and sum(c.isalnum() for c in text) < 2


def box_energy(picture: npt.NDArray[np.uint8], box: Box, factor: int) -> float:
    """Mean stroke strength (:func:`edges`) inside ``box`` (picture pixels) of an analysis picture."""
    y0, y1 = box.y0 // factor, max(box.y0 // factor + 2, -(-box.y1 // factor))
    x0, x1 = box.x0 // factor, max(box.x0 // factor + 2, -(-box.x1 // factor))
    return float(edges(np.ascontiguousarray(picture[y0:y1, x0:x1])).mean())


def still_edge_share(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], box: Box, factor: int) -> float:
    """Share of the edge pixels of ``box`` (an edge in either analysis picture) that are still: edges
    alone can stay where they are while the picture changes (a pattern shifted by its own period)."""
    y0, y1 = box.y0 // factor, max(box.y0 // factor + 2, -(-box.y1 // factor))
    x0, x1 = box.x0 // factor, max(box.x0 // factor + 2, -(-box.x1 // factor))
    crop_a, crop_b = np.ascontiguousarray(a[y0:y1, x0:x1]), np.ascontiguousarray(b[y0:y1, x0:x1])
    edge_a, edge_b = edges(crop_a), edges(crop_b)
    any_edge = int(((edge_a >= EDGE) | (edge_b >= EDGE)).sum())
    return float(still_map(crop_a, crop_b, edge_a, edge_b).sum()) / any_edge if any_edge else 1.0


def box_similarity(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], box: Box, factor: int) -> float:
    """:func:`stroke_similarity` of ``box`` (picture pixels) between two analysis pictures."""
    y0, y1 = box.y0 // factor, max(box.y0 // factor + 2, -(-box.y1 // factor))
    x0, x1 = box.x0 // factor, max(box.x0 // factor + 2, -(-box.x1 // factor))
    return stroke_similarity(a[y0:y1, x0:x1], b[y0:y1, x0:x1])


def areas_to_read(blocks: npt.NDArray[np.bool_], fresh: npt.NDArray[np.bool_]) -> list[tuple[int, int, int, int]]:
    """Block rectangles (x0, y0, x1, y1) of the connected still areas of at least :data:`MIN_AREA`
    blocks that hold at least :data:`MIN_FRESH` and :data:`FRESH_SHARE` ``fresh`` blocks (blocks not read
    yet: single blocks of noise or of the scope's rim flicker in and out of the still map and are not
    worth a reading)."""
    import cv2

    # Blocks of one line of text join across word gaps (three blocks apart), lines one block apart.
    joined = cv2.dilate(blocks.astype(np.uint8), np.ones((3, 7), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    fresh_labels = labels[fresh & blocks]
    counts = np.bincount(fresh_labels, minlength=count) if fresh_labels.size else np.zeros(count, np.int64)
    sizes = np.bincount(labels[blocks], minlength=count)
    wanted = [n for n in range(1, count)
              if sizes[n] >= MIN_AREA and counts[n] >= max(MIN_FRESH, FRESH_SHARE * sizes[n])]
    return [(int(stats[n][0]), int(stats[n][1]), int(stats[n][0] + stats[n][2]), int(stats[n][1] + stats[n][3]))
            for n in wanted]


@dataclass
class _Cluster:
    box: Box
    height: int
    #: A crop of the text as last detected, for recognition (report labels only).
    crop: npt.NDArray[np.uint8]
    #: Pairs (index of the later probe) where it was detected.
    found: set[int] = field(default_factory=set)

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
    """Reads sampled keyframes of each clip and turns their standing text into :class:`OverlayRegion` values."""

    def __init__(self, plan: JoinPlan, options: OverlayOptions, detector: TextDetector | None = None,
                 progress: Progress | None = None, cancel: Cancel | None = None) -> None:
        self.plan = plan
        self.options = options
        self.detector = detector or TextDetector()
        self.progress = progress
        self.cancel = cancel
        self.factor = analysis_factor(plan.target.height)
        #: Pictures the text detector read (whole or cropped) and their pixels, for the benchmark.
        self.reads = 0
        self.read_pixels = 0

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

    def clip(self, clip: ClipPlan) -> tuple[list[OverlayRegion], list[int]]:
        """The regions of one clip and the timeline frames of the keyframes read."""
        times: list[int] = []
        clusters: list[_Cluster] = []
        # pictures[k]: probe k's analysis picture; pair k compares probes k and k + 1 (a single probe
        # is compared with itself: nothing tells standing from moving there, so all its text is masked).
        pictures: list[npt.NDArray[np.uint8]] = []
        previous_edges: npt.NDArray[np.uint8] | None = None
        read: npt.NDArray[np.bool_] | None = None     # blocks the detector has read
        first: tuple[av.VideoFrame, npt.NDArray[np.bool_]] | None = None
        before: npt.NDArray[np.bool_] | None = None   # the still blocks of the pair before
        last: av.VideoFrame | None = None
        for time, frame in self._probes(clip):
            times.append(time)
            last = frame
            picture = analysis_picture(frame, self.factor)
            picture_edges = edges(picture)
            pictures.append(picture)
            if previous_edges is None:
                previous_edges = picture_edges
                continue
            blocks = still_blocks(still_map(pictures[-2], picture, previous_edges, picture_edges))
            previous_edges = picture_edges
            if before is None:
                # The first pair is read on its own only if it stays the only one (a short clip).
                first, before = (frame, blocks), blocks
                continue
            # Read what stood still across two pairs (three probes): a scene that pauses for one
            # interval leaves its tissue in one still map, not in two.
            read = self._look(frame, blocks & before, read, len(pictures) - 2, clusters)
            before, first = blocks, None
        if first is not None:           # one pair: read what it shows standing still
            self._look(first[0], first[1], None, 0, clusters)
        elif len(pictures) == 1 and last is not None:   # one probe: nothing tells standing from moving; read it all
            everywhere = np.ones_like(still_blocks(still_map(pictures[0], pictures[0])))
            self._look(last, everywhere, None, 0, clusters)
            pictures.append(pictures[0])
        # Probe k's timeline frame (the one probe of a one-frame clip is also its own partner).
        probe_times = times if len(times) == len(pictures) else [*times, times[0]]
        if not pictures:
            return [], times
        # Regions are labelled from one reading each (recognition costs as much as detection).
        readings = self.detector.read_many([c.crop for c in clusters]) if clusters else []
        regions = []
        for cluster, reading in zip(clusters, readings, strict=True):
            if glyph_like(cluster.box, *reading):
                standing: set[int] = set()
            else:
                text = readable(*reading)
                needed = DOUBT_SIMILARITY if text else STILL_SIMILARITY
                needed_edges = STILL_EDGES_TEXT if text else STILL_EDGES
                energy = [box_energy(p, cluster.box, self.factor) for p in pictures]
                # The strokes must be there: a box emptied (a banner gone, dark or flat picture behind)
                # stands still but holds no text any more.
                present = ENERGY_SHARE * max(energy[k] for pair in cluster.found for k in (pair, pair + 1))
                standing = {k for k in range(len(pictures) - 1)
                            if min(energy[k], energy[k + 1]) >= present
                            and box_similarity(pictures[k], pictures[k + 1], cluster.box, self.factor) >= needed
                            and still_edge_share(pictures[k], pictures[k + 1], cluster.box,
                                                 self.factor) >= needed_edges}
            regions.extend(self._regions(cluster, standing, probe_times, clip, reading))
        return regions, times

    def _look(self, frame: av.VideoFrame, blocks: npt.NDArray[np.bool_], read: npt.NDArray[np.bool_] | None,
              pair: int, clusters: list[_Cluster]) -> npt.NDArray[np.bool_]:
        """Read the still areas (``blocks``) of ``frame`` that hold blocks not read before; the blocks
        read so far."""
        # A block that stopped standing still is forgotten: what stands there next is read afresh.
        read = np.zeros_like(blocks) if read is None else read & blocks
        areas = areas_to_read(blocks, blocks & ~read)
        if areas:
            self._detect(frame, areas, pair, clusters)
            for bx0, by0, bx1, by1 in areas:
                read[by0:by1, bx0:bx1] |= blocks[by0:by1, bx0:bx1]
        return read

    def _probes(self, clip: ClipPlan) -> Iterator[tuple[int, av.VideoFrame]]:
        """(timeline frame, picture in the target format) of the sampled keyframes of ``clip``, in order
        (a clip with a single keyframe: it and the frame ``still_seconds`` later)."""
        path = clip.info.path
        fmt = self.plan.target
        with open_input(path) as container:
            stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
            key_index, key_pts = keyframe_positions(container, stream, path)
            chosen = choose_samples(key_index, clip.source_frames, clip.source_rate, self.options)
            # Threads on slices of one picture: frame threads would decode pictures after the keyframe
            # that nobody looks at (measured at 1080p: 37 against 48 ms of CPU per keyframe).
            stream.thread_type = "SLICE"
            gap = max(1, round(self.options.still_seconds * clip.source_rate))
            gap_ticks = int(Fraction(gap) / clip.source_rate / stream.time_base) if stream.time_base else 0
            single = len(chosen) == 1
            for position in chosen:
                check_cancelled(self.cancel)
                frame, partner = self._decode_at(container, stream, key_pts[position], gap_ticks if single else 0, path)
                if frame is not None:
                    yield clip.timeline_start + timeline_offset(clip, key_index[position]), normalise(frame, fmt)
                if partner is not None:
                    later = min(key_index[position] + gap, clip.source_frames - 1)
                    yield clip.timeline_start + timeline_offset(clip, later), normalise(partner, fmt)

    def _decode_at(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, pts: int,
                   gap_ticks: int, path: object) -> tuple[av.VideoFrame | None, av.VideoFrame | None]:
        """The keyframe at ``pts`` and, when ``gap_ticks`` > 0, the first decoded frame at least that
        much after it (or the last one before the stream ends)."""
        frame = partner = None
        try:
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            for decoded in container.decode(stream):
                if decoded.pts is None or decoded.pts < pts:
                    continue
                if frame is None:
                    frame = decoded
                    if gap_ticks <= 0:
                        break
                    continue
                partner = decoded
                if decoded.pts >= pts + gap_ticks:
                    break
        except av.error.FFmpegError as exc:
            raise UnreadableMediaError(f"{path} cannot be decoded near timestamp {pts} ({exc}); the recording is "
                                       "damaged: copy it again or remove it from the case.", path=str(path)) from None
        return frame, partner

    def _detect(self, frame: av.VideoFrame, areas: list[tuple[int, int, int, int]], pair: int,
                clusters: list[_Cluster]) -> None:
        """Run the text detector on each still area (blocks) of ``frame``, cropped at native scale with
        context around it (a line's ends may be too faint to stand out in the still map), and add its
        boxes to ``clusters``."""
        import cv2

        fmt = self.plan.target
        bgr = picture_array(frame, format="bgr24")
        unit = BLOCK * self.factor
        rects = [(max(0, (bx0 - CONTEXT_X) * unit), max(0, (by0 - 1) * unit),
                  min(fmt.width, (bx1 + CONTEXT_X) * unit), min(fmt.height, (by1 + 1) * unit))
                 for bx0, by0, bx1, by1 in areas]
        whole = detector_size(fmt.width, fmt.height, self.options.detector_long_side)
        if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in rects) > whole[0] * whole[1]:
            rects = [(0, 0, fmt.width, fmt.height)]     # cheaper read as one shrunk picture
        for x0, y0, x1, y1 in rects:
            crop = bgr[y0:y1, x0:x1]
            scale = min(1.0, self.options.detector_long_side / max(crop.shape[:2]))
            w, h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
            seen = crop if scale == 1.0 else uint8_array(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA))
            pw, ph = max(32, -(-w // 32) * 32), max(32, -(-h // 32) * 32)
            seen = uint8_array(cv2.copyMakeBorder(seen, 0, ph - h, 0, pw - w, cv2.BORDER_REPLICATE))
            self.reads += 1
            self.read_pixels += pw * ph
            for found in self.detector.boxes(seen, (crop.shape[1] / w, crop.shape[0] / h)):
                box = Box(x0 + min(found.x0, x1 - x0 - 1), y0 + min(found.y0, y1 - y0 - 1),
                          x0 + min(found.x1, x1 - x0), y0 + min(found.y1, y1 - y0))
                if box.height > MAX_LINE_SHARE * fmt.height:
                    continue        # not a line of text: a texture the detector took for a text block
                cluster = next((c for c in clusters if c.matches(box)), None)
                text = bgr[box.y0:box.y1, box.x0:box.x1]
                if cluster is None:
                    cluster = _Cluster(box, box.height, text)
                    clusters.append(cluster)
                cluster.box = cluster.box.union(box)
                cluster.crop = text
                cluster.found.add(pair)

    def _regions(self, cluster: _Cluster, standing: set[int], times: list[int], clip: ClipPlan,
                 reading: tuple[str, float]) -> list[OverlayRegion]:
        """One region per run of pairs the cluster stands still in (runs one pair apart are joined)."""
        labels = tuple(sorted(set(classify(reading[0]))))
        keep = self.options.keep_device_settings and only_device_settings(*reading)
        fmt = self.plan.target
        margin = max(4, math.ceil(self.options.margin_share * cluster.height))
        margin_x = max(4, math.ceil(self.options.margin_share_x * cluster.height))
        box = cluster.box.grown(margin_x, fmt.width, fmt.height, margin)
        clip_end = clip.timeline_start + clip.timeline_frames
        # Pair k compares probe k with probe k + 1 (a clip of one probe: the probe and its partner).
        runs: list[list[int]] = []
        for k in sorted(standing):
            if runs and k - runs[-1][-1] <= 2:
                runs[-1].append(k)
            else:
                runs.append([k])
        if not runs:        # never stood still: text moving with the scene, reported and left alone
            first, last = min(cluster.found), max(cluster.found) + 1
            return [OverlayRegion(box, times[first], min(clip_end, times[last] + 1), "transient", labels,
                                  masked=False, seen_at=(times[last],))]
        regions = []
        for run in runs:
            first, last = run[0], run[-1] + 1          # probes showing the text standing
            start = clip.timeline_start if first == 0 else times[first - 1]
            end = clip_end if last >= len(times) - 1 else min(clip_end, times[last + 1] + 1)
            regions.append(OverlayRegion(box, start, end, "overlay", labels, masked=not keep,
                                         seen_at=tuple(times[p] for p in range(first, last + 1))))
        return regions


def find_overlays(plan: JoinPlan, options: OverlayOptions = OverlayOptions(), progress: Progress | None = None,
                  cancel: Cancel | None = None, detector: TextDetector | None = None) -> OverlaySet:
    """The burned-in text regions of a case (see the module doc)."""
    return OverlayFinder(plan, options, detector, progress, cancel).run()
