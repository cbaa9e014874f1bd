"""Which groups of pictures may hide an out-of-body boundary, from the compressed stream alone.

Pure numpy over a :class:`PacketIndex` (packet sizes, keyframe flags and timestamps of every displayed
frame, from demuxing) and the scores of the frames a coarse pass decoded:

* a packet much larger than its neighbours of the same picture class is a scene change (a cut to the
  room compresses badly against the previous picture);
* a group whose inter-coded packets are much larger than those of the groups around it holds new content;
* a group bounded by two in-body keyframes with neither cue is in body throughout; one bounded by two
  out-of-body keyframes is out of body throughout, unless it is long enough to hide a return inside.

Everything else is decoded frame by frame (:func:`suspicious_gops` says which frames and where decoding
may stop early).  Short clips are always decoded in full: a handful of packets gives no statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


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
    def from_decode_order(cls, pts: list[int], size: list[int], keyframe: list[bool]) -> PacketIndex:
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
    #: Forward-predicted pictures right after a keyframe are compared only with those at the same rank in
    #: other GOPs, for this many ranks (the rest form one class): encoders spend bits on them to lift the
    #: GOP's quality from the keyframe (x264 at CRF 23: the first ~2x, the second ~1.4x the later ones),
    #: so against the GOP's later pictures the second one looked like a cut in every other GOP.
    post_key_ranks: int = 3
    #: A video with fewer frames than this is decoded in full: a few packets make no statistics (a clip
    #: of 5 frames whose middle 3 are out of body shows no size spike against its own median).
    full_decode_below_frames: int = 75
    #: A GOP bounded by two out-of-body keyframes is redacted whole without decoding only up to this
    #: length; a longer one could hide a return into the body, so it is decoded.
    max_unrefined_oob_gop_frames: int = 50


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
    decode_to_frame = index.decode_order  # frame index of the i-th packet in decode order
    key_in_decode = index.keyframe[decode_to_frame]
    forward_in_decode = ~key_in_decode & ~index.reordered[decode_to_frame]
    # Encoders size the first forward-predicted pictures after a keyframe differently from the others
    # (x264 spends bits to lift them from the keyframe's quality), so each of the first
    # ``post_key_ranks`` forms a class of its own, compared with the pictures of the same rank in the
    # neighbouring GOPs; a cut at that rank is still far larger than its peers there.
    gop_number = np.cumsum(key_in_decode)
    rank = np.full(forward_in_decode.shape, -1, dtype=np.int64)
    forward_positions = np.flatnonzero(forward_in_decode)
    if forward_positions.size:
        gops_of_forward = gop_number[forward_positions]
        new_gop = np.concatenate(([True], gops_of_forward[1:] != gops_of_forward[:-1]))
        group_start = np.maximum.accumulate(np.where(new_gop, np.arange(forward_positions.size), 0))
        rank[forward_positions] = np.minimum(np.arange(forward_positions.size) - group_start, cues.post_key_ranks)
    classes = (*(rank == r for r in range(cues.post_key_ranks + 1)), ~key_in_decode & ~forward_in_decode)
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
    #: Per range: from which frame on (inclusive) decoding may stop once the latest frame scored is
    #: clearly in body (below the suspect threshold), when the keyframe after the range is in body or the
    #: video ends there, and no level shift lies in its last GOP: the GOP's last size spike (the cut itself
    #: scored in body), or the frame after its keyframe when it has none.  The frames skipped then sit
    #: between two in-body samples with no compressed-domain cue, exactly like those of an unflagged GOP.
    stop_at_inbody_from: tuple[int | None, ...]
    gops_total: int
    gops_flagged: int
    scene_changes: int
    #: Every frame of every range must be decoded and scored: the video is too short for packet-size
    #: statistics (``CueSettings.full_decode_below_frames``), so a short excursion could hide anywhere.
    every_frame: bool = False

    @property
    def frames(self) -> int:
        return sum(end - start for start, end in self.ranges)


def suspicious_gops(index: PacketIndex, key_frames: npt.NDArray[np.int64], key_scores: npt.NDArray[np.float32],
                    enter_threshold: float, suspect_threshold: float, cues: CueSettings) -> RefinePlan:
    """Decide which GOPs must be decoded frame by frame for frame-exact, complete spans.

    A GOP is skipped only when both keyframes bounding it score ``>= enter_threshold`` and it is at most
    ``max_unrefined_oob_gop_frames`` long (the smoothing redacts all of it anyway), or when both score
    below ``suspect_threshold`` (or it is the last GOP and starts in body) and nothing in its packets
    suggests a scene change.  Everything else — disagreeing or uncertain keyframes, a missing keyframe
    score, a size spike, a level shift, a video too short for statistics — is decoded in full.
    """
    starts = gop_starts(index)
    n_gops = int(starts.size)
    score_at = dict(zip(key_frames.tolist(), key_scores.tolist(), strict=True))
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
    decode_everything = index.frame_count < cues.full_decode_below_frames
    long_oob_gop = cues.max_unrefined_oob_gop_frames
    for gop in range(n_gops):
        left = state(int(starts[gop]))
        right = state(int(starts[gop + 1]) if gop + 1 < n_gops else None)
        # Samples inside the GOP (the coarse pass may score more than keyframes) must agree too.
        end = int(starts[gop + 1]) if gop + 1 < n_gops else index.frame_count
        lo, hi = np.searchsorted(sample_frames, [int(starts[gop]) + 1, end])
        inside = {state(int(f)) for f in sample_frames[lo:hi]}
        # The end of the video is no out-of-body keyframe: a last GOP that starts out of body may return
        # into the body before the clip ends, and must not be redacted whole on the word of one keyframe.
        settled_oob = left == "oob" and right == "oob" and inside <= {"oob"} and end - starts[gop] <= long_oob_gop
        settled_body = left == "body" and right in ("body", "end") and not cue_gops[gop] and inside <= {"body"}
        flagged[gop] = decode_everything or not (settled_oob or settled_body)

    ranges: list[tuple[int, int]] = []
    oob_stops: list[int | None] = []
    inbody_stops: list[int | None] = []
    for gop in np.flatnonzero(flagged).tolist():
        start = int(starts[gop])
        end = int(starts[gop + 1]) if gop + 1 < n_gops else index.frame_count
        right = state(end if gop + 1 < n_gops else None)
        # Stopping at the first out-of-body frame redacts the rest of the GOP unseen: only for a GOP short
        # enough to be redacted whole anyway.
        oob_stop = start if right == "oob" and end - start <= long_oob_gop else None
        inbody_stop = None
        if right in ("body", "end") and not level_gops[gop] and not decode_everything:
            # Past the last size spike of this GOP, an in-body frame followed by nothing but an in-body
            # keyframe (or the end) is the situation of an unflagged GOP: it is trusted the same way.
            spikes = changes[(changes >= start) & (changes < end)]
            inbody_stop = int(spikes[-1]) if spikes.size else start + 1
        # A run of adjacent flagged GOPs is one range, decoded end to end; only its last GOP may stop early.
        # (Splitting runs so that every GOP stops early was tried and reverted: on a really encoded
        # video-level test video, a noisy recording whose cut into a 10-frame excursion left no size spike,
        # the GOP holding it stopped after an earlier in-body cut and the excursion was missed.)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
            oob_stops[-1], inbody_stops[-1] = oob_stop, inbody_stop
        else:
            ranges.append((start, end))
            oob_stops.append(oob_stop)
            inbody_stops.append(inbody_stop)
    return RefinePlan(ranges=tuple(ranges), stop_at_oob_from=tuple(oob_stops),
                      stop_at_inbody_from=tuple(inbody_stops), gops_total=n_gops,
                      gops_flagged=int(flagged.sum()), scene_changes=int(changes.size),
                      every_frame=decode_everything)


