"""Find a case's burned-in text cheaply: look for picture detail that stands still while the scene
moves, and run the text detector only there.

**Every keyframe** of each clip is looked at, in order (a push-based finder: :class:`ClipOverlays` is
fed ``(pts, picture)`` and finishes per clip).  When out-of-body detection runs, its coarse pass
decodes every keyframe anyway and hands each one over as it is decoded
(:class:`~endoshare.detect.sampling.KeyframeSink`), so nothing is decoded twice; otherwise
(:meth:`OverlayFinder.run`) each clip is read once from start to end, keyframes only (the decoder
skips every other picture and the loop filter, as detection's coarse pass does; no seeking, so an
MPEG-TS file costs what an MP4 does).  Both paths give the same regions for the same keyframes.  The
keyframes are taken on the finder's own thread (:meth:`ClipOverlays.keyframe`), so the decoder goes on
with the next one meanwhile.

Each keyframe is compared with the one before (a "pair"): the pixels that are an edge in both pictures
and did not change are the **still map** of the pair.  While the scene moves, the still map holds the
burned-in text (and other fixed furniture: the scope's rim, a black border); tissue that moved leaves
nothing in it.  The text detector runs only on the still areas of a pair that it has not read yet,
each cropped from the full picture at its native scale (so a small overlay costs a few milliseconds,
and small text is not shrunk away), or the whole picture shrunk to ``detector_long_side`` when that is
cheaper.  So text that stands on **two consecutive keyframes** is read: a banner shown for at least two
GOPs always is (one of a little over one GOP when it spans two keyframes).

A text box found this way is an overlay in every pair where its strokes are there (their strength at
least half of what it was where found) and stand still (:data:`STILL_SIMILARITY`, or
:data:`DOUBT_SIMILARITY` for a box that reads as text), so a banner that appears for part of a clip
gets a span of its own.  It is masked from the keyframe before it was first seen standing to the
keyframe after it was last seen (to the clip's ends when it was seen at them): when in doubt, mask.
Text that moves with the scene (an instrument's print, a ruler) never stands still and is left alone;
a box the size of one character that reads as at most one character (a specular highlight) is not
text.  Otherwise recognition only labels regions for the report, and unmasks device settings only
when the user asks to keep them.

Memory does not grow with the clip: only the last :attr:`OverlayOptions.window` analysis pictures are
kept.  A box is measured on each new pair as it comes (three numbers per pair), and a box first found
late is measured back over the pictures still kept; before them, the still history of its blocks (when
each block last started standing still) stands in for the pictures, and it is masked back to there.
A clip with a single decodable keyframe is compared with the frame ``still_seconds`` after it.
"""
from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..errors import UnreadableMediaError
from ..media.frames import normalise, picture_array, uint8_array
from ..media.join import ClipPlan, JoinPlan
from ..media.keyframes import KeyframeReader
from ..media.probe import open_input
from ..types import Cancel, Progress, check_cancelled
from .mask import yuv_planes
from .regions import OverlayRegion, OverlaySet
from .text import Box, TextDetector, classify, detector_size, only_device_settings


@dataclass(frozen=True)
class OverlayOptions:
    #: Leave regions whose every reading is device settings only (pressures, light, gain) visible.
    keep_device_settings: bool = False
    #: A mask is the text box grown by this share of its height above and below (at least 4 pixels)...
    margin_share: float = 0.35
    #: ... and by this share of its height left and right: faint characters at the ends of a line are
    #: what the detector misses first (seen on real recorder text over bright tissue).
    margin_share_x: float = 1.0
    #: Longest side the detector sees when a whole picture (or a large still area) is read.
    detector_long_side: int = 960
    #: A clip with a single keyframe is compared with the frame this much later.
    still_seconds: Fraction = Fraction(1, 2)
    #: Analysis pictures kept per clip (the latest keyframes; about 2 MB each at 1080p).
    window: int = 8
    #: The finder's own keyframe pass skips the in-loop deblocking filter, as detection's coarse pass
    #: does, so that both paths see the same pictures (text finding is unaffected: see the README).
    skip_loop_filter: bool = True

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError("the overlay finder keeps at least 2 analysis pictures per clip")


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


#: Weight of a chroma step against a luma step (chroma spans about half the range for the same colours;
#: :func:`edges` adds each chroma step twice).
CHROMA_WEIGHT = 2.0
_WEIGHTS = np.array([[1.0, CHROMA_WEIGHT, CHROMA_WEIGHT]], np.float32)


def edges(picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """|dx| + |dy| of luma plus :data:`CHROMA_WEIGHT` times that of each chroma plane (saturated at 255)."""
    import cv2

    h, w = picture.shape[:2]
    g = np.zeros((h, w), np.uint8)

    def weighted(steps: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        # Saturating adds of non-negative steps: the exact weighted sum, saturated once (10x cv2.transform).
        if steps.ndim == 2 or steps.shape[2] == 1:
            return uint8_array(steps.reshape(steps.shape[:2]))
        y, u, v = cv2.split(steps)
        return uint8_array(cv2.add(y, cv2.add(cv2.add(u, u), cv2.add(v, v))))
    if w > 1:
        g[:, :-1] = weighted(uint8_array(cv2.absdiff(picture[:, 1:], picture[:, :-1])))
    if h > 1:
        g[:-1, :] = cv2.add(g[:-1, :], weighted(uint8_array(cv2.absdiff(picture[1:], picture[:-1]))))
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
    import cv2

    h, w = -(-still.shape[0] // BLOCK) * BLOCK, -(-still.shape[1] // BLOCK) * BLOCK
    padded = np.zeros((h, w), np.float32)
    padded[:still.shape[0], :still.shape[1]] = still
    # The block sums, exactly (small whole numbers in float32), by an area resize.
    sums = cv2.resize(padded, (w // BLOCK, h // BLOCK), interpolation=cv2.INTER_AREA) * (BLOCK * BLOCK)
    return np.asarray(sums >= BLOCK_EDGES - 0.5, dtype=bool)


def block_means(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The mean of each :data:`BLOCK` x :data:`BLOCK` block of a one-plane picture (as :func:`still_blocks`)."""
    import cv2

    h, w = -(-image.shape[0] // BLOCK) * BLOCK, -(-image.shape[1] // BLOCK) * BLOCK
    padded = np.zeros((h, w), np.float32)
    padded[:image.shape[0], :image.shape[1]] = image
    return np.asarray(cv2.resize(padded, (w // BLOCK, h // BLOCK), interpolation=cv2.INTER_AREA), dtype=np.float32)


#: A block read before is read again when its mean edge strength (:func:`edges`) moved by more than this,
#: or by more than this share of what it was (text appearing in a block adds dozens of strong edge pixels).
REREAD_EDGES = 6.0
REREAD_SHARE = 0.35


def stroke_similarity(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic],
                      where: npt.NDArray[np.bool_] | None = None) -> float:
    """How alike the strokes of two crops of one box are (analysis pictures, or grey): 1 for the same picture, near 0
    for unrelated ones; a burned-in overlay keeps its strokes while the scene behind it changes.  ``where``
    (a pixel mask of the crops) leaves the strokes elsewhere out."""
    import cv2

    def strokes(image: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        picture = np.ascontiguousarray(image, dtype=np.float32)
        picture = picture if picture.ndim == 3 else picture[:, :, None]
        h, w, channels = picture.shape
        if h < 2 or w < 2:
            return np.zeros(0, np.float32)
        steps = (cv2.absdiff(picture[:-1, 1:], picture[:-1, :-1]) + cv2.absdiff(picture[1:, :-1], picture[:-1, :-1]))
        steps = steps.reshape(h - 1, w - 1, channels)
        values = np.asarray(cv2.transform(steps, _WEIGHTS[:, :channels]), dtype=np.float32)
        return (values if where is None else values * where[:h - 1, :w - 1]).ravel()
    sa, sb = strokes(a), strokes(b)
    norm = float(np.sqrt(float(sa @ sa) * float(sb @ sb)))
    return float(sa @ sb) / norm if norm > 0 else 1.0


def readable(text: str, confidence: float) -> bool:
    """A recognised line that is text beyond doubt (see :data:`DOUBT_SIMILARITY`)."""
    return confidence >= READABLE_CONFIDENCE and sum(c.isalnum() for c in text) >= READABLE_CHARACTERS


def glyph_like(box: Box, text: str, confidence: float) -> bool:
    """A box the size of one character that reads as at most one character: a specular highlight or a
    blob of tissue, not a line of text (names, dates and IDs are several characters; a wide box that
    reads badly is still treated as text)."""
    return box.width < GLYPH_ASPECT * box.height and sum(c.isalnum() for c in text) < 2


@dataclass(frozen=True)
class Analysis:
    """A keyframe's analysis picture and its :func:`edges`, computed once: every box measured on it (a
    dozen per keyframe) takes its edges from here."""

    picture: npt.NDArray[np.uint8]
    edges: npt.NDArray[np.uint8]

    @classmethod
    def of(cls, picture: npt.NDArray[np.uint8]) -> Analysis:
        return cls(picture, edges(picture))


def box_energy(analysis: Analysis, box: Box, factor: int) -> float:
    """Mean stroke strength (:func:`edges`) inside ``box`` (picture pixels) of an analysis picture."""
    rows, cols = _crop(box, factor)
    return float(analysis.edges[rows, cols].mean())


def _crop(box: Box, factor: int) -> tuple[slice, slice]:
    """The rows and columns of an analysis picture that ``box`` (picture pixels) covers (at least 2 x 2)."""
    y0, x0 = box.y0 // factor, box.x0 // factor
    return slice(y0, max(y0 + 2, -(-box.y1 // factor))), slice(x0, max(x0 + 2, -(-box.x1 // factor)))


def still_edge_share(a: Analysis, b: Analysis, box: Box, factor: int,
                     where: npt.NDArray[np.bool_] | None = None) -> float:
    """Share of the edge pixels of ``box`` (an edge in either analysis picture) that are still: edges
    alone can stay where they are while the picture changes (a pattern shifted by its own period).
    ``where`` (a pixel mask of the box's crop) leaves the pixels elsewhere out."""
    rows, cols = _crop(box, factor)
    edge_a, edge_b = a.edges[rows, cols], b.edges[rows, cols]
    edge = (edge_a >= EDGE) | (edge_b >= EDGE)
    still = still_map(a.picture[rows, cols], b.picture[rows, cols], edge_a, edge_b)
    if where is not None:
        edge, still = edge & where, still & where
    any_edge = int(edge.sum())
    return float(still.sum()) / any_edge if any_edge else 1.0


def box_similarity(a: Analysis, b: Analysis, box: Box, factor: int,
                   where: npt.NDArray[np.bool_] | None = None) -> float:
    """:func:`stroke_similarity` of ``box`` (picture pixels) between two analysis pictures."""
    rows, cols = _crop(box, factor)
    return stroke_similarity(a.picture[rows, cols], b.picture[rows, cols], where)


def areas_to_read(blocks: npt.NDArray[np.bool_], fresh: npt.NDArray[np.bool_]) -> list[tuple[int, int, int, int]]:
    """Block rectangles (x0, y0, x1, y1) around the ``fresh`` blocks (blocks not read yet) of each connected
    still area of at least :data:`MIN_AREA` blocks that holds at least :data:`MIN_FRESH` and
    :data:`FRESH_SHARE` of them (single blocks of noise or of the scope's rim flicker in and out of the
    still map and are not worth a reading; a line read before is not read again because tissue next
    to it joined its area)."""
    import cv2

    # Blocks of one line of text join across word gaps (three blocks apart), lines one block apart.
    joined = cv2.dilate(blocks.astype(np.uint8), np.ones((3, 7), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    fresh_labels = labels[fresh & blocks]
    counts = np.bincount(fresh_labels, minlength=count) if fresh_labels.size else np.zeros(count, np.int64)
    sizes = np.bincount(labels[blocks], minlength=count)
    wanted = [n for n in range(1, count)
              if sizes[n] >= MIN_AREA and counts[n] >= max(MIN_FRESH, FRESH_SHARE * sizes[n])]
    rects = []
    for n in wanted:
        x, y, w, h = (int(v) for v in stats[n][:4])
        rows, cols = np.nonzero((labels[y:y + h, x:x + w] == n) & fresh[y:y + h, x:x + w] & blocks[y:y + h, x:x + w])
        rects.append((x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1))
    return rects


#: A still area is read from a single pair when its strokes correlate at least this well (:func:`area_stands`):
#: opaque burned-in text measured 0.97-1.00, tissue that barely moved between two keyframes up to 0.94.
AREA_SIMILARITY = 0.95
#: A still area that stands only loosely (:func:`area_stands`) is read once most of its still blocks have
#: stood still this long without a break: with a keyframe every second or two, tissue that barely moves
#: leaves such areas for a few seconds; half-transparent text over moving tissue stands all along.
PERSIST_SECONDS = 8.0


def area_stands(a: Analysis, b: Analysis, area: tuple[int, int, int, int], factor: int,
                blocks: npt.NDArray[np.bool_], stood: npt.NDArray[np.float64], unread: npt.NDArray[np.bool_]) -> bool:
    """Whether a still area (a rectangle of ``blocks``, the pair's still blocks) is worth reading now.

    Either its strokes stand still as opaque burned-in text does (:data:`AREA_SIMILARITY` and
    :data:`STILL_EDGES`) and it is :data:`MIN_AREA` blocks wide (a banner on two keyframes is read from
    its one pair), or they stand at least as half-transparent text
    over moving tissue does (:data:`DOUBT_SIMILARITY`, :data:`STILL_EDGES_TEXT`) and most of its still
    blocks have stood for :data:`PERSIST_SECONDS` (``stood``: seconds each block has stood still).
    Measured on generated 1080p video with a keyframe every 2 s (similarity, still edge share): opaque
    overlays 0.97-1.00 and 0.41-0.99; tissue that happens to leave blocks in the still map 0.23-0.94 and
    0.02-0.66.  Only the ``unread`` blocks are measured: a line read before, standing inside the area,
    would vouch for the tissue around it (an overlay next to the scope's rim made the rim be read again
    whenever the rim held still, 85 % of the detector's pixels on the benchmark case).
    """
    x0, y0, x1, y1 = area
    unit = BLOCK * factor
    box = Box(x0 * unit, y0 * unit, x1 * unit, y1 * unit)
    rows, cols = _crop(box, factor)
    where = np.repeat(np.repeat(unread[y0:y1, x0:x1], BLOCK, axis=0), BLOCK, axis=1)
    where = where[:min(rows.stop, a.picture.shape[0]) - rows.start, :min(cols.stop, a.picture.shape[1]) - cols.start]
    still = blocks[y0:y1, x0:x1]
    persists = int((still & (stood[y0:y1, x0:x1] >= PERSIST_SECONDS)).sum()) >= 0.5 * int(still.sum())
    share = still_edge_share(a, b, box, factor, where)
    opaque = share >= STILL_EDGES and x1 - x0 >= MIN_AREA
    if share < STILL_EDGES_TEXT or not (opaque or persists):
        return False        # decided without the strokes' similarity (the costly measure on a large area)
    similarity = box_similarity(a, b, box, factor, where)
    return opaque and similarity >= AREA_SIMILARITY or persists and similarity >= DOUBT_SIMILARITY


#: Keyframes a :class:`ClipOverlays` holds for its thread (the one being taken included) before the caller
#: waits: two 1080p frames, 6 MB.
QUEUED_KEYFRAMES = 2
#: A box measured as not even loosely standing (:data:`DOUBT_SIMILARITY`, :data:`STILL_EDGES_TEXT`) in this
#: many pairs running is no longer measured until the detector finds it again (its text went away; what
#: stands there next is read afresh): a clip full of passing false boxes costs no more per keyframe.
QUIET_PAIRS = 8
#: Pairs whose measurement is missing (before a box was found, or while it was not measured).
_UNKNOWN = float("nan")


@dataclass
class _Cluster:
    """One text box of a clip, and what each pair (keyframe) showed there."""

    box: Box
    height: int
    #: A crop of the text as last detected, for recognition (report labels only).
    crop: npt.NDArray[np.uint8]
    #: Pairs where it was detected (pair k compares keyframes k and k + 1).
    found: set[int] = field(default_factory=set)
    #: Per keyframe: mean stroke strength (:func:`box_energy`); per pair: stroke similarity and still edge
    #: share (:func:`box_similarity`, :func:`still_edge_share`).  NaN where not measured.
    energy: array[float] = field(default_factory=lambda: array("f"))
    similarity: array[float] = field(default_factory=lambda: array("f"))
    still_share: array[float] = field(default_factory=lambda: array("f"))
    #: Pairs ``first <= k < end`` before the pictures kept when it was found (in pair ``found``), where its
    #: blocks stood still without a break: (first, end, found) -- taken as standing if it stands in every
    #: pair from ``end`` to ``found`` (it was there all along the pictures kept).
    history: list[tuple[int, int, int]] = field(default_factory=list)
    measuring: bool = True
    quiet: int = 0

    def matches(self, box: Box) -> bool:
        inter = self.box.intersection(box)
        return (inter >= 0.5 * min(self.box.area, box.area)
                and 0.6 <= box.height / max(1, self.height) <= 1.6)

    def set(self, values: array[float], index: int, value: float) -> None:
        if len(values) <= index:
            values.extend([_UNKNOWN] * (index + 1 - len(values)))
        values[index] = value

    def measured(self, values: array[float], index: int) -> float:
        return values[index] if index < len(values) else _UNKNOWN


def timeline_offset(clip: ClipPlan, source_index: int) -> int:
    """First offset into the clip's timeline frames that shows source frame ``source_index``."""
    offset = math.ceil(Fraction(source_index) * clip.target_rate / clip.source_rate)
    return max(0, min(clip.timeline_frames - 1, offset))


class ClipOverlays:
    """The overlay finder of one clip, push-based: :meth:`keyframe` for each keyframe in presentation
    order, then :meth:`scanned` once the clip is read (a :class:`~endoshare.detect.sampling.KeyframeSink`).
    """

    def __init__(self, finder: OverlayFinder, position: int, number: int) -> None:
        self.finder = finder
        self.position = position
        self.number = number
        self.clip = finder.plan.clips[position]
        self.factor = finder.factor
        #: Source pts of every keyframe taken, in order (8 bytes each).
        self.keys = array("q")
        #: The latest analysis pictures and their edges: keyframe ``count - len(window) + i`` at ``i``.
        self.window: deque[Analysis] = deque(maxlen=finder.options.window)
        #: The still blocks of the pairs within the window (pair ``count - 1 - len(pairs) + i`` at ``i``).
        self.pairs: deque[npt.NDArray[np.bool_]] = deque()
        #: Still history of the pairs that left the window, per block: the last pair it was still in, and
        #: the first pair of that run of still pairs (one pair's break allowed).
        self.last_still: npt.NDArray[np.int64] | None = None
        self.run_start: npt.NDArray[np.int64] | None = None
        self.forgotten = -1      # the latest pair that left the window
        self.read: npt.NDArray[np.bool_] | None = None       # blocks the detector has read
        self.read_edges: npt.NDArray[np.float32] | None = None      # ... and their mean edge strength then
        self.clusters: list[_Cluster] = []
        self.first: av.VideoFrame | None = None   # kept while it is the only keyframe (a one-frame clip)
        #: The latest keyframe and the still blocks of the latest pair (what a clip of one pair reads at its end).
        self.last: tuple[av.VideoFrame, npt.NDArray[np.bool_]] | None = None
        #: Per block, the time (seconds) its current run of still pairs began (NaN: not still in the last pair).
        self.still_since: npt.NDArray[np.float64] | None = None
        time_base = self.clip.info.video.time_base
        self.time_base = float(time_base) if time_base else None
        self.done = False
        #: The keyframes handed to the finder's thread and not yet taken (see :meth:`keyframe`).
        self.pending: deque[Future[None]] = deque()
        self.last_pts: int | None = None

    @property
    def count(self) -> int:
        return len(self.keys)

    def keyframe(self, pts: int, frame: av.VideoFrame) -> None:
        """Take the next keyframe (source ``pts``; any pixel format and size: it is brought to the case's).

        The work is done on the finder's own thread, while the caller decodes the next keyframe (the text
        detector and OpenCV release the GIL): the caller waits only when :data:`QUEUED_KEYFRAMES` are
        still to be taken, and :meth:`settle` waits for them all (and raises what the work raised)."""
        if self.last_pts is not None and pts <= self.last_pts:
            return          # not after the one before: a repeated timestamp, nothing new to see
        self.last_pts = pts
        self.pending.append(self.finder.worker.submit(self._take, pts, normalise(frame, self.finder.plan.target)))
        while len(self.pending) > QUEUED_KEYFRAMES:
            self.pending.popleft().result()

    def settle(self) -> None:
        """Wait until every keyframe given is taken."""
        while self.pending:
            self.pending.popleft().result()

    def _take(self, pts: int, frame: av.VideoFrame, everywhere: bool = False) -> None:
        analysis = Analysis.of(analysis_picture(frame, self.factor))
        probe = self.count
        self.keys.append(pts)
        previous = self.window[-1] if self.window else None
        self.window.append(analysis)
        if previous is None:
            self.first = frame
            return
        self.first = None
        pair = probe - 1
        blocks = still_blocks(still_map(previous.picture, analysis.picture, previous.edges, analysis.edges))
        if everywhere:
            blocks = np.ones_like(blocks)
        self.pairs.append(blocks)
        while len(self.pairs) >= len(self.window):          # pair k needs keyframes k and k + 1
            self._forget(self.pairs.popleft())
        for cluster in self.clusters:
            if cluster.measuring:
                self._measure(cluster, pair)
        stood = self._stood(blocks, pair)
        self._look(frame, blocks, pair, stood, every_area=everywhere)
        self.last = frame, blocks

    def _seconds(self, probe: int) -> float:
        """Keyframe ``probe``'s time (its pts in seconds; without a time base, two seconds a keyframe)."""
        return self.keys[probe] * self.time_base if self.time_base else 2.0 * probe

    def _stood(self, blocks: npt.NDArray[np.bool_], pair: int) -> npt.NDArray[np.float64]:
        """Seconds each block has stood still, up to this pair (0 where it is not still)."""
        start = self._seconds(pair)
        if self.still_since is None:
            self.still_since = np.full(blocks.shape, np.nan)
        self.still_since[~blocks] = np.nan
        self.still_since[blocks & np.isnan(self.still_since)] = start
        return np.nan_to_num(self._seconds(pair + 1) - self.still_since, nan=0.0)

    def _forget(self, blocks: npt.NDArray[np.bool_]) -> None:
        """Fold the oldest pair's still blocks into the per-block still history."""
        self.forgotten += 1
        if self.last_still is None or self.run_start is None:
            self.last_still = np.full(blocks.shape, -10, np.int64)
            self.run_start = np.full(blocks.shape, -10, np.int64)
        broken = blocks & (self.last_still < self.forgotten - 2)
        self.run_start[broken] = self.forgotten
        self.last_still[blocks] = self.forgotten

    def _picture(self, probe: int) -> Analysis | None:
        first = self.count - len(self.window)
        return self.window[probe - first] if first <= probe < self.count else None

    def _measure(self, cluster: _Cluster, pair: int) -> None:
        """What pair ``pair`` (both its pictures kept) shows in ``cluster``'s box."""
        a, b = self._picture(pair), self._picture(pair + 1)
        if a is None or b is None:
            return
        box, factor = cluster.box, self.factor
        for probe, picture in ((pair, a), (pair + 1, b)):
            if math.isnan(cluster.measured(cluster.energy, probe)):
                cluster.set(cluster.energy, probe, box_energy(picture, box, factor))
        similarity, share = box_similarity(a, b, box, factor), still_edge_share(a, b, box, factor)
        cluster.set(cluster.similarity, pair, similarity)
        cluster.set(cluster.still_share, pair, share)
        if similarity >= DOUBT_SIMILARITY and share >= STILL_EDGES_TEXT:
            cluster.quiet = 0
        else:
            cluster.quiet += 1
            cluster.measuring = cluster.quiet < QUIET_PAIRS

    def _catch_up(self, cluster: _Cluster, pair: int) -> None:
        """A box just found in ``pair``, or found again after it was no longer measured: measure it on
        every pair still kept, and take the still history of its blocks for the pairs before them."""
        if cluster.measuring and cluster.found:
            return          # measured all along
        oldest = self.count - len(self.window)          # the oldest pair whose pictures are kept
        for kept in range(oldest, self.count - 1):
            if math.isnan(cluster.measured(cluster.similarity, kept)):
                self._measure(cluster, kept)
        cluster.measuring, cluster.quiet = True, 0
        if self.last_still is None or self.run_start is None or oldest <= 0:
            return
        unit = BLOCK * self.factor
        rows = slice(cluster.box.y0 // unit, -(-cluster.box.y1 // unit))
        cols = slice(cluster.box.x0 // unit, -(-cluster.box.x1 // unit))
        recent = self.last_still[rows, cols] >= self.forgotten - 1
        if recent.any():        # its blocks stood still up to the pictures kept: since when?
            cluster.history.append((int(self.run_start[rows, cols][recent].min()), oldest, pair))

    def _look(self, frame: av.VideoFrame, blocks: npt.NDArray[np.bool_], pair: int,
              stood: npt.NDArray[np.float64], every_area: bool = False) -> None:
        """Read the still areas (``blocks``) of ``frame`` that hold blocks not read before and stand still as
        text does (:func:`area_stands`; ``stood``: seconds each block has stood still), or all of them
        (``every_area``)."""
        # A block read before is read again after a pair where it did not stand still and what it shows
        # changed (its mean edge strength): what stands there next (a banner where tissue or the scope's
        # rim stood) is read afresh, while the rim or a line that drops out of the still map for a pair,
        # or text over moving tissue, is not.
        strength = block_means(self.window[-1].edges)
        if self.read is None or self.read_edges is None:
            self.read, self.read_edges = np.zeros_like(blocks), np.zeros(blocks.shape, np.float32)
        unchanged = np.abs(strength - self.read_edges) <= np.maximum(REREAD_EDGES, REREAD_SHARE * self.read_edges)
        self.read &= blocks | unchanged
        read = self.read
        unexplained = ~read & ~self._standing_text(blocks.shape, pair)
        areas = areas_to_read(blocks, blocks & unexplained)
        if not every_area:
            a, b = self._picture(pair), self._picture(pair + 1)
            assert a is not None and b is not None
            areas = [area for area in areas if area_stands(a, b, area, self.factor, blocks, stood, unexplained)]
        if areas:
            for cluster in self.finder.detect(frame, areas, self.clusters):
                self._catch_up(cluster, pair)
                cluster.found.add(pair)
            for bx0, by0, bx1, by1 in areas:
                taken = blocks[by0:by1, bx0:bx1]
                read[by0:by1, bx0:bx1] |= taken
                self.read_edges[by0:by1, bx0:bx1][taken] = strength[by0:by1, bx0:bx1][taken]
        self.read = read

    def _standing_text(self, shape: tuple[int, ...], pair: int) -> npt.NDArray[np.bool_]:
        """The blocks under the text boxes found before that stand still in ``pair`` as burned-in text does
        (:data:`STILL_SIMILARITY`, :data:`STILL_EDGES`): their text is known and measured pair by pair, so
        what is left of it in the still map (a line's ends, the blocks of its gaps) is nothing new to read.
        A box found on tissue does not stand still, so what appears there later is read afresh."""
        known = np.zeros(shape, bool)
        unit = BLOCK * self.factor
        for cluster in self.clusters:
            if (cluster.measured(cluster.similarity, pair) >= STILL_SIMILARITY
                    and cluster.measured(cluster.still_share, pair) >= STILL_EDGES):      # NaN: never
                box = cluster.box
                known[box.y0 // unit:-(-box.y1 // unit), box.x0 // unit:-(-box.x1 // unit)] = True
        return known

    def scanned(self, frame_of: Callable[[int], int | None]) -> None:
        """The clip is read: turn what was seen into regions (``frame_of``: source pts -> source frame
        index), on the finder's thread too (recognition runs while detection goes on; :meth:`OverlayFinder.run`
        waits for it).  A clip of a single keyframe is left unfinished: :meth:`OverlayFinder.run` reads it
        again with a partner picture."""
        self.finder.finishing.append(self.finder.worker.submit(self._scanned, frame_of))

    def _scanned(self, frame_of: Callable[[int], int | None]) -> None:
        self.settle()       # every keyframe is taken (this thread took them): raises what their work raised
        if self.count > 1 or not self.keys:
            self.finish(frame_of)

    def finish(self, frame_of: Callable[[int], int | None]) -> None:
        """Turn what was seen into regions, whatever the number of keyframes."""
        self.settle()
        if self.count == 2 and self.last is not None:
            # One pair: nothing confirms or refutes it; read every still area it shows.
            frame, blocks = self.last
            self._look(frame, blocks, 0, np.zeros(blocks.shape), every_area=True)
        if self.count == 1 and self.first is not None:
            # One picture: nothing tells standing from moving; read it all (it is its own partner).
            self._take(self.keys[0] + 1, self.first, everywhere=True)
            del self.keys[-1]
        self.finder.finished(self, *self._regions(frame_of))
        self.done = True

    def _regions(self, frame_of: Callable[[int], int | None]) -> tuple[list[OverlayRegion], list[int]]:
        clip = self.clip
        times: list[int] = []
        index = 0
        for pts in self.keys:
            found = frame_of(pts)
            index = index if found is None else found
            times.append(clip.timeline_start + timeline_offset(clip, index))
        if not times:
            return [], []
        # Keyframe k's timeline frame (the one keyframe of a one-frame clip is also its own partner).
        probe_times = times if len(times) > 1 else [times[0], times[0]]
        pairs = len(probe_times) - 1
        # Recognition (as costly as detection) for the boxes that stood at least loosely in some pair; the
        # others are reported as transient without a reading.
        maybe = [c for c in self.clusters if c.history or any(
            s >= DOUBT_SIMILARITY and e >= STILL_EDGES_TEXT for s, e in zip(c.similarity, c.still_share, strict=False))]
        read = dict(zip(map(id, maybe), self.finder.detector.read_many([c.crop for c in maybe]) if maybe else [],
                        strict=True))
        regions = []
        for cluster in self.clusters:
            reading = read.get(id(cluster), ("", 0.0))
            standing = (set() if glyph_like(cluster.box, *reading)
                        else self._standing(cluster, readable(*reading), pairs))
            regions.extend(self.finder.regions(cluster, standing, probe_times, clip, reading))
        return regions, times

    @staticmethod
    def _standing(cluster: _Cluster, text: bool, pairs: int) -> set[int]:
        """The pairs where ``cluster`` stands still with its strokes there."""
        needed = DOUBT_SIMILARITY if text else STILL_SIMILARITY
        needed_edges = STILL_EDGES_TEXT if text else STILL_EDGES
        energy = cluster.energy
        # The strokes must be there: a box emptied (a banner gone, dark or flat picture behind) stands
        # still but holds no text any more.
        present = ENERGY_SHARE * max((cluster.measured(energy, k) for pair in cluster.found for k in (pair, pair + 1)
                                      if not math.isnan(cluster.measured(energy, k))), default=0.0)
        standing = {k for k in range(pairs)
                    if min(cluster.measured(energy, k), cluster.measured(energy, k + 1)) >= present
                    and cluster.measured(cluster.similarity, k) >= needed
                    and cluster.measured(cluster.still_share, k) >= needed_edges}      # NaN: never
        for first, end, found in cluster.history:
            if standing.issuperset(range(end, found + 1)):
                standing.update(range(first, end))
        return standing


class OverlayFinder:
    """Finds the standing text of each clip of a case and turns it into :class:`OverlayRegion` values.

    Fed by detection (:meth:`sink`, one :class:`ClipOverlays` per clip), or reading each clip itself
    (:meth:`run` reads every clip that was not fed in full).
    """

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
        #: Keyframes the finder decoded itself (not fed by detection).
        self.keyframes_read = 0
        #: The thread that takes the keyframes (one, so that they are taken in order); :meth:`run` ends it.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay-finder")
        #: The clips fed in full whose regions are being made on that thread (see :meth:`ClipOverlays.scanned`).
        self.finishing: list[Future[None]] = []
        self._results: dict[int, tuple[list[OverlayRegion], list[int]]] = {}
        #: The number of each clip's latest finder (:meth:`sink`; the finders are numbered 1, 2, ...).
        self._latest: dict[int, int] = {}
        self._fed = 0

    def sink(self, clip: ClipPlan) -> ClipOverlays:
        """A fresh finder for ``clip``'s keyframes, to be fed as they are decoded (what it was fed before is
        dropped: a scan that failed half-way is not mixed with the next)."""
        position = next((n for n, c in enumerate(self.plan.clips) if c is clip), None)
        if position is None:
            position = self.plan.clips.index(clip)      # an equal description of one of the case's clips
        self._results.pop(position, None)
        self._fed += 1
        self._latest[position] = self._fed
        return ClipOverlays(self, position, self._fed)

    def finished(self, clip: ClipOverlays, regions: list[OverlayRegion], samples: list[int]) -> None:
        # Only the clip's latest finder counts: one replaced while its work was still queued is dropped.
        if self._latest.get(clip.position, clip.number) == clip.number:
            self._results[clip.position] = (regions, samples)

    def run(self) -> OverlaySet:
        """The regions of every clip: those fed in full, and each other clip read here.  The finder's
        thread ends here, whatever happens (a queue or the desktop app runs many cases in one process)."""
        try:
            while self.finishing:
                self.finishing.pop(0).result()
            regions: list[OverlayRegion] = []
            samples: list[int] = []
            for position, clip in enumerate(self.plan.clips):
                if position not in self._results:
                    self._scan(clip)
                clip_regions, clip_samples = self._results[position]
                regions.extend(clip_regions)
                samples.extend(clip_samples)
                if self.progress is not None:
                    self.progress(position + 1, len(self.plan.clips))
            return OverlaySet.of(regions, samples)
        finally:
            self.worker.shutdown(wait=True, cancel_futures=True)

    def _scan(self, clip: ClipPlan) -> None:
        """Read ``clip`` from start to end, decoding its keyframes only (no seeking, every core), into a finder."""
        finder = self.sink(clip)
        pts_all: list[int] = []

        def packet_seen(packet: av.Packet) -> None:
            if packet.pts is not None:
                pts_all.append(int(packet.pts))

        with KeyframeReader(clip.info.path, stream_index=clip.info.video.index, on_packet=packet_seen,
                            skip_loop_filter=self.options.skip_loop_filter) as keyframes:
            for pts, frame in keyframes:
                check_cancelled(self.cancel)
                self.keyframes_read += 1
                finder.keyframe(pts, frame)
        pts_all.sort()

        def frame_of(pts: int) -> int:
            return bisect.bisect_left(pts_all, pts)

        finder.settle()
        if finder.count == 1 and finder.first is not None and clip.source_frames > 1:
            # One keyframe: compare it with the frame ``still_seconds`` later.
            gap = max(1, round(self.options.still_seconds * clip.source_rate))
            partner = self._frame_after(clip, finder.keys[0], gap)
            if partner is not None:
                finder.keyframe(*partner)
        finder.finish(frame_of)

    def _frame_after(self, clip: ClipPlan, pts: int, gap: int) -> tuple[int, av.VideoFrame] | None:
        """The first decoded frame ``gap`` source frames after ``pts`` (or the last one), and its pts."""
        path = clip.info.path
        partner = None
        with open_input(path) as container:
            stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
            try:
                seen = 0
                for frame in container.decode(stream):
                    if frame.pts is None or frame.pts <= pts:
                        continue
                    partner, seen = (int(frame.pts), frame), seen + 1
                    if seen >= gap:
                        break
            except av.error.FFmpegError as exc:
                raise UnreadableMediaError(f"{path} cannot be decoded after timestamp {pts} ({exc}); the recording "
                                           "is damaged: copy it again or remove it from the case.",
                                           path=str(path)) from None
        return partner

    def detect(self, frame: av.VideoFrame, areas: list[tuple[int, int, int, int]],
               clusters: list[_Cluster]) -> list[_Cluster]:
        """Run the text detector on each still area (blocks) of ``frame``, cropped at native scale with
        context around it (a line's ends may be too faint to stand out in the still map); add its boxes
        to ``clusters``, and return the clusters it found."""
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
        hits: list[_Cluster] = []
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
                if cluster not in hits:
                    hits.append(cluster)
        return hits

    def regions(self, cluster: _Cluster, standing: set[int], times: list[int], clip: ClipPlan,
                reading: tuple[str, float]) -> list[OverlayRegion]:
        """One region per run of pairs the cluster stands still in (runs one pair apart are joined)."""
        labels = tuple(sorted(set(classify(reading[0]))))
        keep = self.options.keep_device_settings and only_device_settings(*reading)
        fmt = self.plan.target
        margin = max(4, math.ceil(self.options.margin_share * cluster.height))
        margin_x = max(4, math.ceil(self.options.margin_share_x * cluster.height))
        box = cluster.box.grown(margin_x, fmt.width, fmt.height, margin)
        clip_end = clip.timeline_start + clip.timeline_frames
        # Pair k compares keyframe k with keyframe k + 1 (a clip of one keyframe: it and its partner).
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
            first, last = run[0], run[-1] + 1          # keyframes showing the text standing
            start = clip.timeline_start if first == 0 else times[first - 1]
            end = clip_end if last >= len(times) - 1 else min(clip_end, times[last + 1] + 1)
            regions.append(OverlayRegion(box, start, end, "overlay", labels, masked=not keep,
                                         seen_at=tuple(times[p] for p in range(first, last + 1))))
        return regions


def find_overlays(plan: JoinPlan, options: OverlayOptions = OverlayOptions(), progress: Progress | None = None,
                  cancel: Cancel | None = None, detector: TextDetector | None = None) -> OverlaySet:
    """The burned-in text regions of a case, each clip read by the finder itself (see the module doc)."""
    return OverlayFinder(plan, options, detector, progress, cancel).run()
