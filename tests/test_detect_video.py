"""Detection over whole videos: frame-exact spans, a short excursion between keyframes, little decoding.

Test videos are assembled at test time from still pictures — generated ones (endoshare.synthetic) and,
when the development data is present, real in-body and out-of-body endoscope pictures too — panned
slowly and encoded with libx264 at 320x180, 25 fps, one keyframe every 50 frames (2 s).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from conftest import DEV_DATA, picture_sources
from endoshare import synthetic
from endoshare.cli import detect as detect_cli
from endoshare.detect import registry
from endoshare.detect.base import Detector
from endoshare.detect.cues import CueSettings, PacketIndex, scene_change_frames, suspicious_gops
from endoshare.detect.run import DetectOptions, detect_video, evaluate_segments
from endoshare.detect.sampling import DetectProgress, ReadSettings
from endoshare.detect.smooth import DEFAULT_MARGIN_SECONDS, SmoothingOptions
from endoshare.errors import (
    CancelledError,
    EmptyFileError,
    InputError,
    MissingInputError,
    NoVideoStreamError,
    UnreadableMediaError,
    WeightsError,
)
from endoshare.sample import write_clip
from endoshare.timeline import SegmentSet, seconds_to_frames

WIDTH, HEIGHT, RATE, GOP = 320, 180, 25, 50
FRAMES = 1500
#: Ten out-of-body frames strictly between the keyframes at 600 and 650.
EXCURSION = (620, 630)
#: A long out-of-body stretch entering between keyframes 850/900 and leaving between 1000/1050.
STRETCH = (880, 1010)
#: The default safety margin (smooth.DEFAULT_MARGIN_SECONDS) in frames of these videos.
DEFAULT_MARGIN_FRAMES = int(seconds_to_frames(DEFAULT_MARGIN_SECONDS, Fraction(RATE)))
#: In-body scene cuts (the camera moves to another view) — ordinary content changes, not out of body.
INBODY_CUTS = (300, 1200)
#: Pixels of panning: scenes are loaded this much larger than the video.
PAN = 24

Image = npt.NDArray[np.uint8]


def red_fraction(frames: Image) -> npt.NDArray[np.float64]:
    rgb = frames.astype(np.int16)
    red = (rgb[..., 0] > rgb[..., 1] + 40) & (rgb[..., 0] > rgb[..., 2] + 40)
    return red.mean(axis=(-2, -1))


class RedTissueDetector:
    """Stand-in stateless detector: out of body when almost no pixel is tissue-red."""

    name = "red-tissue-test"
    input_size = (64, 36)
    stateful = False
    threshold = 0.5

    def __init__(self) -> None:
        self.frames_scored = 0

    def reset(self) -> None:
        pass

    def score(self, frames: Image) -> npt.NDArray[np.float32]:
        self.frames_scored += len(frames)
        return (1.0 - np.clip(red_fraction(frames) / 0.1, 0.0, 1.0)).astype(np.float32)


class RecordingStatefulDetector(RedTissueDetector):
    """Stateful stand-in: remembers every frame it was fed, to check order and regularity."""

    name = "stateful-test"
    stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.seen.clear()

    def score(self, frames: Image) -> npt.NDArray[np.float32]:
        self.seen.extend(float(f.mean()) for f in frames)
        return super().score(frames)


def load_image(name: str, width: int = WIDTH, height: int = HEIGHT) -> Image:
    """A picture of the development data (``name`` as in frames.tsv), or a generated one: ``synthetic:inbody:7``."""
    if name.startswith("synthetic:"):
        _, kind, seed = name.split(":")
        generate = synthetic.inbody_frame if kind == "inbody" else synthetic.oob_frame
        return generate(np.random.default_rng(int(seed)), width, height, 0.0)
    assert DEV_DATA is not None
    with av.open(str(DEV_DATA / name)) as container:
        return next(container.decode(video=0)).to_ndarray(width=width, height=height, format="rgb24")


def load_scene(name: str) -> Image:
    return load_image(name, WIDTH + PAN, HEIGHT + PAN)


def labelled_files(source: str, *labels: str) -> list[str]:
    """Names of pictures of ``source`` ("synthetic" or "development") that carry one of ``labels``."""
    if source == "synthetic":
        return [f"synthetic:{label}:{seed}" for label in labels if label in ("inbody", "oob") for seed in range(40)]
    assert DEV_DATA is not None
    with open(DEV_DATA / "frames.tsv", newline="", encoding="utf-8") as handle:
        return [row["file"] for row in csv.DictReader(handle, delimiter="\t") if row["label"] in labels]


def inbody_views(source: str) -> list[str]:
    """In-body pictures to build videos from (of the development data, the laparoscopic set)."""
    return [f for f in labelled_files(source, "inbody") if source == "synthetic" or "egoodman92" in f]


@dataclass(frozen=True)
class Scenes:
    inbody: tuple[Image, ...]   # three views
    oob: tuple[Image, ...]      # two views


def truth_labels() -> list[str]:
    labels = ["inbody"] * FRAMES
    for start, end in (EXCURSION, STRETCH):
        labels[start:end] = ["oob"] * (end - start)
    return labels


def encode_video(path: Path, scenes: Scenes, *, scenecut: bool, codec: str = "libx264", x264_params: str = "") -> Path:
    if codec == "libx265":
        options = {"preset": "ultrafast",
                   "x265-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:log-level=error"}
    else:
        options = {"preset": "veryfast"}
        params = [p for p in ("" if scenecut else "scenecut=0", x264_params) if p]
        if params:
            options["x264-params"] = ":".join(params)
    labels = truth_labels()
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=RATE, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        for i, label in enumerate(labels):
            if label == "oob":
                image = scenes.oob[0] if i < EXCURSION[1] else scenes.oob[1]
            else:
                image = scenes.inbody[int(np.searchsorted(INBODY_CUTS, i, side="right"))]
            # A slow back-and-forth pan over a slightly larger picture gives the encoder real motion.
            x = abs(i % (2 * PAN) - PAN)
            moving = np.ascontiguousarray(image[PAN // 2:PAN // 2 + HEIGHT, x:x + WIDTH])
            for packet in stream.encode(av.VideoFrame.from_ndarray(moving, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def count_by_full_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def keyframe_indices(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    ordered = sorted(packets, key=lambda p: p.pts)
    return [i for i, p in enumerate(ordered) if p.is_keyframe]


@pytest.fixture(scope="module", params=picture_sources())
def red_scenes(request: pytest.FixtureRequest) -> Scenes:
    """In-body views rich in tissue red and out-of-body views with none, as the stand-in needs; generated
    pictures always, the development stills as well when present."""
    source = str(request.param)
    inbody = inbody_views(source)
    small = {f: red_fraction(load_image(f, 64, 36)) for f in inbody}
    chosen_inbody = [f for f in inbody if small[f] >= 0.25][:3]
    chosen_oob = [f for f in labelled_files(source, "oob") if red_fraction(load_image(f, 64, 36)) <= 0.02][:2]
    assert len(chosen_inbody) == 3 and len(chosen_oob) == 2
    return Scenes(tuple(load_scene(f) for f in chosen_inbody), tuple(load_scene(f) for f in chosen_oob))


@pytest.fixture(scope="module")
def red_videos(tmp_path_factory: pytest.TempPathFactory, red_scenes: Scenes) -> Callable[[bool], Path]:
    """The test video with or without x264 scene-cut keyframes, each encoded once per module."""
    made: dict[bool, Path] = {}

    def get(scenecut: bool) -> Path:
        if scenecut not in made:
            path = tmp_path_factory.mktemp("video") / f"case-{'sc' if scenecut else 'nosc'}.mp4"
            made[scenecut] = encode_video(path, red_scenes, scenecut=scenecut)
        return made[scenecut]
    return get


@pytest.fixture(params=[False, True], ids=["scenecut-off", "scenecut-on"])
def red_video(request: pytest.FixtureRequest, red_videos: Callable[[bool], Path]) -> tuple[Path, bool]:
    return red_videos(bool(request.param)), bool(request.param)


def expected_segments(margin: int, frame_count: int = FRAMES) -> SegmentSet:
    return SegmentSet.of((max(0, a - margin), min(frame_count, b + margin)) for a, b in (EXCURSION, STRETCH))


#: Refined ranges decode reference pictures first: a boundary between two of them may be widened over the
#: (at most ``refine_widening``) skipped frames between them.  With 0, every boundary is frame-exact.
WIDENING = ReadSettings().refine_widening
EXACT = ReadSettings(refine_widening=0)


def assert_spans(segments: SegmentSet, margin: int, widening: int = WIDENING) -> None:
    """The two truth spans with ``margin`` on each side, each side widened by at most ``widening`` frames."""
    assert len(segments) == 2, segments
    for found, expected in zip(segments, expected_segments(margin), strict=True):
        assert expected.start_frame - widening <= found.start_frame <= expected.start_frame, (found, expected)
        assert expected.end_frame <= found.end_frame <= expected.end_frame + widening, (found, expected)


def inbody_kept_share(segments: SegmentSet) -> float:
    figures = evaluate_segments(segments, truth_labels(), FRAMES)
    assert figures.inbody_kept_fraction is not None
    return figures.inbody_kept_fraction


def test_coarse_to_fine_is_frame_exact_and_decodes_few_frames(red_video: tuple[Path, bool]) -> None:
    path, scenecut = red_video
    keys = keyframe_indices(path)
    if not scenecut:
        # The excursion must lie strictly inside one GOP, or the test would not test the cues.
        assert not any(EXCURSION[0] <= k < EXCURSION[1] for k in keys)
        assert any(k < EXCURSION[0] for k in keys) and any(k > EXCURSION[1] for k in keys)
    detector = RedTissueDetector()
    result = detect_video(path, detector, DetectOptions())
    assert result.frame_count == count_by_full_decode(path) == FRAMES
    assert result.frame_rate == Fraction(RATE)
    margin = DEFAULT_MARGIN_FRAMES
    assert margin == 4
    assert_spans(result.segments, margin)
    assert detect_video(path, RedTissueDetector(), DetectOptions(read=EXACT)).segments == expected_segments(margin)
    assert inbody_kept_share(result.segments) >= 0.95
    assert result.stats.strategy == "coarse-to-fine"
    assert result.stats.frames_decoded <= FRAMES // 4, result.stats
    assert detector.frames_scored == result.stats.frames_scored < FRAMES // 4
    # Refined GOPs end early once the rest is settled by the samples around it (see RefinePlan), and
    # skip the frames no other picture refers to.
    assert result.stats.frames_decoded < result.stats.keyframes + result.stats.gops_refined * GOP // 2


def test_refine_scores_a_grid_and_bisects_boundaries(red_video: tuple[Path, bool]) -> None:
    """Decoding the reference pictures first, scoring one frame in ``refine_step`` (plus size spikes) and
    bisecting between samples that disagree gives exactly the spans of decoding and scoring every frame of
    the refined ranges, for far fewer frames decoded and through the model."""
    path, _ = red_video
    exact = SmoothingOptions(margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0))
    every = RedTissueDetector()
    everything = ReadSettings(refine_references_first=False, refine_step=1, refine_widening=0)
    full = detect_video(path, every, DetectOptions(smoothing=exact, read=everything))
    sparse_detector = RedTissueDetector()
    sparse = detect_video(path, sparse_detector, DetectOptions(smoothing=exact, read=EXACT))
    assert sparse.segments == full.segments == expected_segments(0)
    assert sparse.stats.frames_decoded <= full.stats.frames_decoded
    assert sparse_detector.frames_scored < 0.5 * every.frames_scored
    # The frames on both sides of every boundary were looked at, not inferred.
    scored = set(sparse.sample_frames.tolist())
    for start, end in (EXCURSION, STRETCH):
        assert {start - 1, start, end - 1, end} <= scored
    # With the default widening, a boundary between two reference pictures leaves the skipped frames between
    # them unscored, on the out-of-body side: never narrower, at most WIDENING frames wider.
    widened = detect_video(path, RedTissueDetector(), DetectOptions(smoothing=exact))
    assert_spans(widened.segments, 0)
    assert widened.stats.frames_decoded < 0.7 * full.stats.frames_decoded
    for name, least in (("refine_step", 1), ("refine_widening", 0)):
        with pytest.raises(ValueError, match=name):
            ReadSettings(**{name: least - 1})


@pytest.mark.parametrize("bframes", [2, 3])
def test_skipped_frames_at_a_boundary_widen_it_by_at_most_refine_widening(red_scenes: Scenes, tmp_path: Path,
                                                                          bframes: int) -> None:
    """B-frames that no picture refers to are skipped at first.  A boundary found between two decoded
    pictures is widened over the skipped frames between them only when there are at most
    ``refine_widening`` of them (and one side is out of body); otherwise they are decoded and scored."""
    path = encode_video(tmp_path / f"b{bframes}.mp4", red_scenes, scenecut=False,
                        x264_params=f"bframes={bframes}:b-pyramid=none:b-adapt=0")
    no_margin = SmoothingOptions(margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0))
    results = [detect_video(path, RedTissueDetector(),
                            DetectOptions(smoothing=no_margin, read=ReadSettings(refine_widening=widening)))
               for widening in range(bframes + 1)]
    # Each boundary lies in a run of ``bframes`` skipped frames: too many to widen over, decoded.
    assert all(result.segments == expected_segments(0) for result in results[:-1])
    widened = results[-1]
    assert_spans(widened.segments, 0, bframes)
    assert widened.segments != expected_segments(0)   # the widening was used, and saved decoding
    assert widened.stats.frames_decoded < results[-2].stats.frames_decoded


@pytest.mark.parametrize("excursion", [(857, 861), (858, 862)])
def test_sparse_reference_pictures_still_give_a_sample_every_refine_step(tmp_path: Path,
                                                                       excursion: tuple[int, int]) -> None:
    """Five B-frames in a row leave reference pictures 6 frames apart: a 4-frame excursion (refine_step)
    between two of them, with no size cue, is still found, by decoding the skipped frames on the grid."""
    labels = [False] * 1000
    labels[excursion[0]:excursion[1]] = [True] * 4
    labels[880:950] = [True] * 70        # the GOP 850-900 is refined: its keyframes disagree
    noise = np.random.default_rng(1)
    frames = [np.clip(np.full((HEIGHT, WIDTH, 3), (40, 110, 170) if oob else (200, 60, 50), np.int16)
                      + noise.integers(-20, 21, (HEIGHT, WIDTH, 1)), 0, 255).astype(np.uint8) for oob in labels]
    path = tmp_path / "b5.mp4"
    write_clip(path, frames, gop=50, options={"x264-params": "scenecut=0:bframes=5:b-pyramid=none:b-adapt=0"})
    blind = CueSettings(spike_ratio=float("inf"), level_ratio=float("inf"))
    result = detect_video(path, RedTissueDetector(), DetectOptions(
        smoothing=SmoothingOptions(margin_seconds=0, fill_gap_seconds=0), cues=blind))
    first, second = result.segments
    assert excursion[0] - WIDENING <= first.start_frame <= excursion[0]
    assert excursion[1] <= first.end_frame <= excursion[1] + WIDENING
    assert (second.start_frame, second.end_frame) == (880, 950)


def test_a_long_refined_range_holds_few_decoded_frames(red_videos: Callable[[bool], Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded however long a run of refined GOPs is: decoded frames wait unscored (full size)
    for at most MAX_HELD_FRAMES before the samples so far are settled."""
    from endoshare.detect import sampling

    most = 0
    original = sampling._Refiner._take

    def counting(self: sampling._Refiner, rng: sampling._Range, fidx: int, frame: av.VideoFrame) -> None:
        nonlocal most
        original(self, rng, fidx, frame)
        most = max(most, len(rng.held))

    monkeypatch.setattr(sampling._Refiner, "_take", counting)
    every_gop = CueSettings(level_ratio=0.0)     # every GOP is a "level shift": refined, in long runs
    result = detect_video(red_videos(False), RedTissueDetector(), DetectOptions(cues=every_gop))
    # All but the two GOPs between out-of-body keyframes inside the stretch: 17 GOPs in the first run.
    assert result.stats.gops_refined == result.stats.gops_total - 2 == FRAMES // GOP - 2
    assert 0 < most <= sampling.MAX_HELD_FRAMES
    assert_spans(result.segments, DEFAULT_MARGIN_FRAMES)


def test_frames_asked_for_are_decoded_even_if_the_decoder_skips_them(
        red_videos: Callable[[bool], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The size-spike and boundary frames a refined range asks for are decoded by switching FFmpeg's
    skip_frame per packet; a decoder that ignored the switch would still have them decoded (everything,
    from the keyframe), never inferred."""
    from endoshare.detect import sampling

    path = red_videos(False)
    no_margin = SmoothingOptions(margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0))
    normal = detect_video(path, RedTissueDetector(), DetectOptions(smoothing=no_margin, read=EXACT))
    requests: list[int] = []
    original = sampling._Refiner._decoded

    def ignoring_requests(self: sampling._Refiner, first: int, end: int,
                          also: set[int] | frozenset[int] | None) -> Iterator[tuple[int, av.VideoFrame]]:
        requests.extend(also or ())
        return original(self, first, end, frozenset() if also is not None else None)

    monkeypatch.setattr(sampling._Refiner, "_decoded", ignoring_requests)
    stubborn = detect_video(path, RedTissueDetector(), DetectOptions(smoothing=no_margin, read=EXACT))
    assert requests, "nothing was asked for: the test would prove nothing"
    assert stubborn.segments == normal.segments == expected_segments(0)
    assert stubborn.stats.frames_decoded > normal.stats.frames_decoded


def test_boundaries_are_exact_without_margin(red_video: tuple[Path, bool]) -> None:
    path, _ = red_video
    options = DetectOptions(smoothing=SmoothingOptions(margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0)),
                            read=EXACT)
    result = detect_video(path, RedTissueDetector(), options)
    assert [(s.start_frame, s.end_frame) for s in result.segments] == [EXCURSION, STRETCH]


def test_hevc_excursion_between_keyframes_is_found(red_scenes: Scenes, tmp_path: Path) -> None:
    """The compressed-domain cues only use packet sizes, flags and timestamps: HEVC works the same."""
    path = encode_video(tmp_path / "case-hevc.mp4", red_scenes, scenecut=False, codec="libx265")
    assert not any(EXCURSION[0] <= k < EXCURSION[1] for k in keyframe_indices(path))
    no_margin = SmoothingOptions(margin_seconds=Fraction(0), fill_gap_seconds=Fraction(0))
    result = detect_video(path, RedTissueDetector(), DetectOptions(smoothing=no_margin, read=EXACT))
    assert result.frame_count == FRAMES
    assert [(s.start_frame, s.end_frame) for s in result.segments] == [EXCURSION, STRETCH]
    assert result.stats.frames_decoded <= FRAMES // 4
    assert_spans(detect_video(path, RedTissueDetector(), DetectOptions(smoothing=no_margin)).segments, 0)


def test_without_size_cues_the_excursion_between_keyframes_would_be_missed(
        red_videos: Callable[[bool], Path]) -> None:
    """Proof that the excursion in the fixed-GOP video is found by the compressed-domain cues."""
    path = red_videos(False)
    blind = DetectOptions(cues=CueSettings(spike_ratio=float("inf"), level_ratio=float("inf")))
    result = detect_video(path, RedTissueDetector(), blind)
    assert not any(result.segments.contains(i) for i in range(*EXCURSION))
    assert detect_video(path, RedTissueDetector()).stats.scene_changes > 0


def test_gop_plan_rules_on_a_synthetic_packet_index() -> None:
    """Which GOPs are decoded in full, from keyframe scores and packet sizes alone."""
    frames = 50  # keyframes at 0, 10, 20, 30, 40; no B-frames
    sizes = [1000 if i % 10 == 0 else 50 for i in range(frames)]
    sizes[45] = 300  # a scene change inside the last GOP (a spike, too short for a level shift)
    index = PacketIndex.from_decode_order(list(range(frames)), sizes, [i % 10 == 0 for i in range(frames)])
    keys = np.array([0, 10, 20, 30, 40])
    scores = np.array([0.0, 0.0, 0.9, 0.0, 0.0], dtype=np.float32)
    cues = CueSettings(full_decode_below_frames=0)  # the rules for a long video, on a short index
    plan = suspicious_gops(index, keys, scores, 0.5, 0.5, cues)
    # body|body: trusted; body|oob and oob|body: boundaries inside; body|end with a spike: decoded.
    assert plan.ranges == ((10, 30), (40, 50))
    assert plan.scene_changes == 1 and plan.gops_flagged == 3
    assert plan.stop_at_oob_from == (None, None)
    assert plan.stop_at_inbody_from == (21, 45) and not plan.every_frame
    both_oob = suspicious_gops(index, keys, np.array([0.9, 0.9, 0.9, 0.0, 0.0], np.float32), 0.5, 0.5, cues)
    assert both_oob.ranges == ((20, 30), (40, 50))  # GOPs 0 and 1 lie between out-of-body keyframes
    assert both_oob.stop_at_oob_from[0] is None and both_oob.stop_at_inbody_from[0] == 21
    entering = suspicious_gops(index, keys, np.array([0.0, 0.0, 0.0, 0.9, 0.9], np.float32), 0.5, 0.5, cues)
    # The last GOP starts out of body but the end of the video is no out-of-body keyframe: it may come
    # back into the body before the end, so it is decoded (and may stop early only once back in body).
    assert entering.ranges == ((20, 30), (40, 50)) and entering.stop_at_oob_from == (20, None)
    assert entering.stop_at_inbody_from == (None, 45)
    uncertain = suspicious_gops(index, keys, np.array([0.0, 0.3, 0.0, 0.0, 0.0], np.float32), 0.5, 0.2, cues)
    assert uncertain.ranges == ((0, 20), (40, 50))
    unscored = suspicious_gops(index, keys[1:], scores[1:], 0.5, 0.5, cues)
    assert unscored.ranges[0][0] == 0  # a keyframe without a score is never trusted


def test_size_spikes_compare_the_pictures_after_a_keyframe_with_their_peers() -> None:
    """x264 spends more bits on the first forward pictures after each keyframe: no cut in any GOP."""
    frames, gop = 1000, 50  # no B-frames; keyframe 1000, then 300, 160 and 100 for the rest
    sizes = [1000 if i % gop == 0 else 300 if i % gop == 1 else 160 if i % gop == 2 else 100 for i in range(frames)]
    keyframes = [i % gop == 0 for i in range(frames)]
    cues = CueSettings()
    index = PacketIndex.from_decode_order(list(range(frames)), sizes, keyframes)
    assert scene_change_frames(index, cues).size == 0
    # A cut to the room at that very rank is still a cut, and one later in the GOP too.
    sizes[402], sizes[630] = 700, 600
    index = PacketIndex.from_decode_order(list(range(frames)), sizes, keyframes)
    assert scene_change_frames(index, cues).tolist() == [402, 630]


def test_gop_plan_decodes_long_out_of_body_gops_and_short_videos() -> None:
    frames = 400  # keyframes at 0, 100, 200, 300: 4 s GOPs at 25 fps
    sizes = [1000 if i % 100 == 0 else 50 for i in range(frames)]
    index = PacketIndex.from_decode_order(list(range(frames)), sizes, [i % 100 == 0 for i in range(frames)])
    keys = np.array([0, 100, 200, 300])
    oob_middle = np.array([0.0, 0.9, 0.9, 0.0], np.float32)
    plan = suspicious_gops(index, keys, oob_middle, 0.5, 0.5, CueSettings(max_unrefined_oob_gop_frames=50))
    # 100 frames between two out-of-body keyframes could hide a return into the body: decoded, and
    # decoding does not stop at the first out-of-body frame.
    assert plan.ranges == ((0, 300),) and plan.stop_at_oob_from == (None,)
    trusted = suspicious_gops(index, keys, oob_middle, 0.5, 0.5, CueSettings(max_unrefined_oob_gop_frames=100))
    assert trusted.ranges == ((0, 100), (200, 300))
    short = PacketIndex.from_decode_order([0, 1, 2, 3, 4], [1000, 50, 50, 50, 50], [True] + [False] * 4)
    # Five frames make no packet-size statistics: decoded and scored in full even with an in-body keyframe,
    # and never stopped early on an in-body frame.
    short_plan = suspicious_gops(short, np.array([0]), np.array([0.0], np.float32), 0.5, 0.5, CueSettings())
    assert short_plan.ranges == ((0, 5),) and short_plan.every_frame
    assert short_plan.stop_at_inbody_from == (None,)


def detect_in_solid_clip(path: Path, labels: list[bool], gop: int) -> SegmentSet:
    """Encode tissue-red (in body) and drape-blue (out of body) frames with one keyframe every ``gop``
    frames, detect with no margin and no gap filling: the spans say which frames were looked at."""
    frames = [np.full((HEIGHT, WIDTH, 3), (40, 110, 170) if oob else (200, 60, 50), np.uint8) for oob in labels]
    write_clip(path, frames, gop=gop, options={"x264-params": "scenecut=0"})
    return detect_video(path, RedTissueDetector(), DetectOptions(
        smoothing=SmoothingOptions(margin_seconds=0, fill_gap_seconds=0))).segments


def test_every_frame_of_a_very_short_clip_is_looked_at(tmp_path: Path) -> None:
    """A 5-frame clip whose middle three frames are out of body, its keyframe in body; one whose middle frame
    alone is; a 60-frame clip with one out-of-body frame, found without any size cue."""
    for name, labels in (("five", [False, True, True, True, False]), ("one", [False, False, True, False, False])):
        segments = detect_in_solid_clip(tmp_path / f"{name}.mp4", labels, gop=50)
        assert [segments.contains(i) for i in range(5)] == labels
    labels = [i == 37 for i in range(60)]
    frames = [np.full((HEIGHT, WIDTH, 3), (40, 110, 170) if oob else (200, 60, 50), np.uint8) for oob in labels]
    write_clip(tmp_path / "sixty.mp4", frames, gop=50, options={"x264-params": "scenecut=0"})
    blind = CueSettings(spike_ratio=float("inf"), level_ratio=float("inf"))
    result = detect_video(tmp_path / "sixty.mp4", RedTissueDetector(), DetectOptions(
        smoothing=SmoothingOptions(margin_seconds=0, fill_gap_seconds=0), cues=blind))
    assert result.segments == SegmentSet.of([(37, 38)])
    assert result.stats.frames_scored == 60


def test_one_out_of_body_keyframe_does_not_redact_a_long_gop(tmp_path: Path) -> None:
    """One keyframe for 12 s: the first 20 frames are out of body, the rest in body."""
    segments = detect_in_solid_clip(tmp_path / "long-gop.mp4", [i < 20 for i in range(300)], gop=1000)
    assert segments == SegmentSet.of([(0, 20)])


def test_sequential_strategy_agrees_and_decodes_everything(red_video: tuple[Path, bool]) -> None:
    path, _ = red_video
    fast = detect_video(path, RedTissueDetector(), DetectOptions(read=EXACT))
    full = detect_video(path, RedTissueDetector(), DetectOptions(strategy="sequential"))
    assert full.segments == fast.segments
    assert full.stats.frames_decoded == full.frame_count == FRAMES
    assert full.sample_frames.tolist() == list(range(FRAMES))


def test_stateful_detector_is_fed_every_frame_in_order(red_video: tuple[Path, bool]) -> None:
    path, _ = red_video
    detector = RecordingStatefulDetector()
    result = detect_video(path, detector, DetectOptions())
    assert result.stats.strategy == "sequential" and detector.resets == 1
    assert len(detector.seen) == FRAMES
    assert result.segments == expected_segments(DEFAULT_MARGIN_FRAMES)
    # Frame order: the fed sequence equals a plain decode of the video resized the same way.
    with av.open(str(path)) as container:
        reference = [float(f.to_ndarray(width=64, height=36, format="rgb24",
                                        interpolation=ReadSettings().interpolation).mean())
                     for i, f in enumerate(container.decode(video=0)) if i % 7 == 0]
    with pytest.raises(ValueError, match="sequential"):
        detect_video(path, RecordingStatefulDetector(), DetectOptions(strategy="coarse-to-fine"))
    stepped = RecordingStatefulDetector()
    sparse = detect_video(path, stepped, DetectOptions(sequential_step=7))
    assert sparse.sample_frames.tolist() == list(range(0, FRAMES, 7))
    assert stepped.seen == pytest.approx(reference)
    # Unsampled frames next to an out-of-body sample are redacted: recall never drops.
    for start, end in (EXCURSION, STRETCH):
        assert all(sparse.segments.contains(i) for i in range(start, end))


def test_edit_list_hidden_frames_are_not_counted(red_video: tuple[Path, bool], tmp_path: Path) -> None:
    """A stream-copy cut keeps hidden packets behind an MP4 edit list: frame indices skip them."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    import subprocess
    path, _ = red_video
    cut = tmp_path / "cut.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-ss", "21.3", "-i", str(path),
                    "-c", "copy", str(cut)], check=True)
    with av.open(str(cut)) as container:
        hidden = sum(1 for p in container.demux(video=0) if p.size and p.is_discard)
    assert hidden > 0, "ffmpeg did not write an edit list; the test would prove nothing"
    fast = detect_video(cut, RedTissueDetector(), DetectOptions(read=EXACT))
    full = detect_video(cut, RedTissueDetector(), DetectOptions(strategy="sequential"))
    assert fast.frame_count == full.frame_count == count_by_full_decode(cut)
    assert fast.segments == full.segments and len(fast.segments) == 2


def test_stream_without_timestamps_falls_back_to_sequential(red_video: tuple[Path, bool], tmp_path: Path) -> None:
    path, _ = red_video
    raw = tmp_path / "case.h264"
    with av.open(str(path)) as source, av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    result = detect_video(raw, RedTissueDetector())
    assert result.stats.strategy == "sequential"
    assert result.frame_count == FRAMES
    assert result.segments == expected_segments(DEFAULT_MARGIN_FRAMES)


def test_progress_is_measured_and_cancel_stops(red_video: tuple[Path, bool]) -> None:
    path, _ = red_video
    events: list[DetectProgress] = []
    detect_video(path, RedTissueDetector(), DetectOptions(), progress=events.append)
    phases = [e.phase for e in events]
    assert phases[0] == "index" and "refine" in phases
    index_events = [e for e in events if e.phase == "index"]
    assert [e.done for e in index_events] == sorted(e.done for e in index_events)
    assert index_events[-1].done == index_events[-1].total == FRAMES
    refine_events = [e for e in events if e.phase == "refine"]
    assert refine_events[-1].done == refine_events[-1].total > 0

    calls = 0

    def cancel_after_a_while() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    with pytest.raises(CancelledError, match=path.name):
        detect_video(path, RedTissueDetector(), DetectOptions(), cancel=cancel_after_a_while)
    with pytest.raises(CancelledError):
        detect_video(path, RedTissueDetector(), DetectOptions(strategy="sequential"), cancel=lambda: True)


def test_result_json_shape(red_video: tuple[Path, bool]) -> None:
    path, _ = red_video
    result = detect_video(path, RedTissueDetector(), DetectOptions())
    data = json.loads(json.dumps(result.to_json()))
    assert data["input"] == str(path) and data["frame_count"] == FRAMES and data["frame_rate"] == "25/1"
    assert data["detector"] == "red-tissue-test"
    assert SegmentSet.from_json(data["segments"]) == result.segments
    assert_spans(result.segments, DEFAULT_MARGIN_FRAMES)
    assert "scores" not in data
    assert Fraction(data["options"]["smoothing"]["margin_seconds"]) == DEFAULT_MARGIN_SECONDS
    assert data["stats"]["frames_decoded"] == result.stats.frames_decoded
    with_scores = result.to_json(scores=True)["scores"]
    assert len(with_scores["frames"]) == len(with_scores["scores"]) == result.stats.frames_scored
    restored = DetectOptions.from_json(json.dumps(data["options"]))
    assert restored == result.options


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    detector = RedTissueDetector()
    with pytest.raises(MissingInputError) as missing:
        detect_video(tmp_path / "nope.mp4", detector)
    assert isinstance(missing.value, FileNotFoundError)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFileError):
        detect_video(empty, detector)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(UnreadableMediaError, match="notes.mp4"):
        detect_video(text, detector)
    audio = tmp_path / "sound.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        samples = (np.sin(np.arange(8000) / 5) * 0.2).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(NoVideoStreamError, match="sound.m4a"):
        detect_video(audio, detector)


# --------------------------------------------------------------------------------------------------
# Command line


def cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="endoshare")
    detect_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    if args.command == "detect":
        command = detect_cli.DetectCommand(
            inputs=tuple(args.videos), detector=args.detector, weights=args.weights,
            margin_seconds=args.margin, fill_gap_seconds=args.fill_gap, enter_threshold=args.threshold,
            exit_threshold=args.exit_threshold, strategy=args.strategy, step=args.step, scores=args.scores,
            as_json=args.as_json, show_progress=False)
        code = detect_cli.detect_command(command, out, err)
    else:
        command = detect_cli.EvalCommand(video=args.video, truth=args.truth, detector=args.detector,
                                         weights=args.weights, margin_seconds=args.margin,
                                         strategy=args.strategy, as_json=args.as_json)
        code = detect_cli.eval_command(command, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def stand_in_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    def create(name: str, weights: str | Path | None = None) -> Detector:
        if weights is not None:
            raise WeightsError(f"weights file {weights} does not exist", path=weights)
        return RedTissueDetector()
    monkeypatch.setattr(registry, "create_detector", create)


def test_cli_detect_json_lines_and_failed_input(stand_in_registry: None, red_video: tuple[Path, bool],
                                                tmp_path: Path) -> None:
    path, _ = red_video
    missing = tmp_path / "missing.mp4"
    code, out, _ = cli(["detect", str(path), str(missing), "--json", "--margin", "0.2", "--scores"])
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    ok, failed = lines
    assert set(ok) >= {"input", "frame_count", "frame_rate", "detector", "segments", "scores"}
    api = detect_video(path, RedTissueDetector(),
                       DetectOptions(smoothing=SmoothingOptions(margin_seconds=Fraction(1, 5))))
    assert ok["segments"] == api.segments.to_json()
    assert_spans(api.segments, 5)  # 0.2 s * 25 = 5 frames
    assert failed["input"] == str(missing) and "does not exist" in failed["error"]
    assert failed["error_type"] == "MissingInputError"
    # One line is a valid --segments file.
    from endoshare.timeline import load_segments_file
    seg_file = tmp_path / "segments.json"
    seg_file.write_text(out.splitlines()[0])
    assert load_segments_file(seg_file) == api.segments

    code, _, err = cli(["detect", str(path), "--threshold", "0.3", "--exit-threshold", "0.6"])
    assert code == 2 and "exit_threshold" in err

    code, table, _ = cli(["detect", str(path)])
    by_default = detect_video(path, RedTissueDetector(), DetectOptions())
    assert by_default.options.smoothing.margin_seconds == DEFAULT_MARGIN_SECONDS
    assert code == 0 and f"{FRAMES} frames" in table and f" {next(iter(by_default.segments)).start_frame} " in table


def test_cli_eval_video_figures(stand_in_registry: None, red_video: tuple[Path, bool], tmp_path: Path) -> None:
    path, _ = red_video
    labels = truth_labels()
    labels[STRETCH[0] - 2:STRETCH[0]] = ["transition"] * 2
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"labels": labels}))
    code, out, _ = cli(["eval-video", str(path), str(truth), "--json"])
    assert code == 0
    figures = json.loads(out)
    redacted = np.array(detect_video(path, RedTissueDetector()).segments.mask(FRAMES))
    lab = np.array(labels)
    assert figures["oob_recall"] == 1.0 and figures["missed_oob_frames"] == 0
    assert figures["n_transition"] == 2
    assert figures["inbody_kept_frames"] == int(((lab == "inbody") & ~redacted).sum())
    assert figures["n_inbody"] == int((lab == "inbody").sum())
    assert figures["inbody_kept"] == pytest.approx(figures["inbody_kept_frames"] / figures["n_inbody"])

    code, text, _ = cli(["eval-video", str(path), str(truth)])
    assert code == 0 and "100.00 %" in text

    short = tmp_path / "short.json"
    short.write_text(json.dumps({"labels": labels[:-5]}))
    code, _, err = cli(["eval-video", str(path), str(short)])
    assert code == 1 and f"{FRAMES - 5} labels" in err and f"{FRAMES} frames" in err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": ["inside"] * FRAMES}))
    code, _, err = cli(["eval-video", str(path), str(bad)])
    assert code == 1 and "'inside'" in err


def test_evaluate_segments_rejects_length_mismatch() -> None:
    with pytest.raises(InputError, match="3 labels"):
        evaluate_segments(SegmentSet(), ["oob", "inbody", "transition"], 4)


# --------------------------------------------------------------------------------------------------
# The real built-in detector


@pytest.fixture(scope="module")
def builtin_detector() -> Detector:
    return registry.create_detector("builtin")     # the model ships in the package: never skipped


@pytest.mark.parametrize("source", picture_sources())
def test_builtin_detector_on_assembled_video(builtin_detector: Detector, source: str, tmp_path: Path) -> None:
    """The shipped detector through the coarse-to-fine path, on views it classifies correctly as stills."""
    width, height = builtin_detector.input_size
    inbody = inbody_views(source)
    oob = labelled_files(source, "oob")
    inbody_scores = builtin_detector.score(np.stack([load_image(f, width, height) for f in inbody]))
    oob_scores = builtin_detector.score(np.stack([load_image(f, width, height) for f in oob]))
    calm = [f for f, s in zip(inbody, inbody_scores, strict=True) if s < 0.5 * builtin_detector.threshold][:3]
    clear = [f for f, s in zip(oob, oob_scores, strict=True) if s > 2 * builtin_detector.threshold][:2]
    assert len(calm) >= 3 and len(clear) >= 2, f"the built-in detector separates too few {source} stills"
    scenes = Scenes(tuple(load_scene(f) for f in calm), tuple(load_scene(f) for f in clear))
    path = encode_video(tmp_path / "builtin.mp4", scenes, scenecut=False)
    result = detect_video(path, builtin_detector, DetectOptions())
    assert result.frame_count == FRAMES
    margin = DEFAULT_MARGIN_FRAMES
    for start, end in (EXCURSION, STRETCH):
        assert all(result.segments.contains(i) for i in range(max(0, start - margin), min(FRAMES, end + margin)))
    assert inbody_kept_share(result.segments) >= 0.95
    assert result.stats.frames_decoded < FRAMES // 3

    code, out, _ = cli(["detect", str(path), "--json"])
    assert code == 0
    assert json.loads(out)["segments"] == result.segments.to_json()


def test_skipping_the_loop_filter_moves_builtin_scores_within_tolerance(
        builtin_detector: Detector, red_videos: Callable[[bool], Path]) -> None:
    """Coarse-to-fine decodes without H.264's deblocking filter (cheaper); the squashed frames the model
    sees barely change: scores of the same frames stay within 0.02 of an exact decode, decisions equal."""
    path = red_videos(False)
    exact = detect_video(path, builtin_detector, DetectOptions(strategy="sequential"))
    by_frame = dict(zip(exact.sample_frames.tolist(), exact.sample_scores.tolist(), strict=True))
    fast = detect_video(path, builtin_detector, DetectOptions())
    assert fast.options.read.skip_loop_filter
    approx = np.asarray([by_frame[i] for i in fast.sample_frames.tolist()])
    assert np.abs(fast.sample_scores - approx).max() < 0.02
    threshold = builtin_detector.threshold
    assert ((fast.sample_scores >= threshold) == (approx >= threshold)).all()
    # With the filter on, the coarse-to-fine path sees exactly the frames the sequential scan sees.
    filtered = detect_video(path, builtin_detector, DetectOptions(read=ReadSettings(skip_loop_filter=False)))
    exact_again = np.asarray([by_frame[i] for i in filtered.sample_frames.tolist()])
    assert np.abs(filtered.sample_scores - exact_again).max() < 1e-5


def test_reference_coarse_pass_sees_an_excursion_without_size_cues(tmp_path: Path) -> None:
    """With the size cues switched off, keyframes alone miss a short excursion between them; decoding
    every reference picture finds it anyway."""
    from endoshare.detect.registry import create_detector
    from endoshare.detect.run import DetectOptions, detect_video
    from endoshare.sample import synthetic_frames, write_clip

    labels = [False] * 150
    labels[63:73] = [True] * 10                 # strictly between the keyframes at 50 and 100
    video = tmp_path / "excursion.mp4"
    write_clip(video, synthetic_frames(labels, 160, 96, seed=3), gop=50,
               options={"x264-params": "scenecut=0"})
    no_cues = CueSettings(spike_ratio=1e9, level_ratio=1e9)
    detector = create_detector("builtin")
    keyframes_only = detect_video(video, detector, DetectOptions(cues=no_cues))
    assert not any(keyframes_only.segments.contains(i) for i in range(63, 73))
    reference = detect_video(video, detector, DetectOptions(cues=no_cues, coarse_frames="reference"))
    assert all(reference.segments.contains(i) for i in range(63, 73))
    assert reference.options.coarse_frames == "reference"
