"""Burned-in recorder overlays: planted names, dates of birth and IDs are masked in every frame, in
fast and advanced mode; device settings follow the setting; the in-body picture is left alone."""

from __future__ import annotations

import json
import math
import socket
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import DEV_DATA, picture_sources
from endoshare import synthetic
from endoshare.cases import discover_case
from endoshare.cli import main as cli_main
from endoshare.errors import CancelledError
from endoshare.jobs.queue import options_from_record, options_to_record
from endoshare.media.join import plan_join
from endoshare.overlay.find import find_overlays, stroke_similarity
from endoshare.overlay.mask import FILL_Y, mask_frame
from endoshare.overlay.regions import OverlayRegion, OverlaySet
from endoshare.overlay.text import Box, TextDetector, classify, model_dir, only_device_settings
from endoshare.overlay.verify import verify_overlays
from endoshare.pipeline import CaseRequest, ProcessOptions, probe_case, process_case
from endoshare.render.common import Redaction, RenderResult
from endoshare.timeline import SegmentSet
from overlay_media import STYLES, Line, draw, overlay_clip, patient_lines, text_boxes

WIDTH, HEIGHT, FRAMES = 640, 360, 50


@dataclass(frozen=True)
class PlantedClip:
    style: int
    lines: tuple
    boxes: dict[str, tuple[int, int, int, int]]


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector()


def make_case(folder: Path, styles: tuple[int, ...], layouts: tuple[int, ...] = (0, 1)) -> list[PlantedClip]:
    """One clip per style, the layout changing from clip to clip."""
    folder.mkdir(parents=True)
    planted = []
    for number, (style, layout) in enumerate(zip(styles, layouts, strict=False)):   # fewer styles: fewer clips
        lines = patient_lines(seed=style, layout=layout)
        overlay_clip(folder / f"clip{number + 1}.mp4", FRAMES, STYLES[style], lines, width=WIDTH, height=HEIGHT)
        planted.append(PlantedClip(style, lines, text_boxes(lines, STYLES[style], WIDTH, HEIGHT)))
    return planted


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, list[PlantedClip]]]:
    root = tmp_path_factory.mktemp("overlay-cases")
    # case-c's second clip: half-transparent text over the moving picture itself.
    return [(root / name, make_case(root / name, styles, layouts))
            for name, styles, layouts in (("case-a", (0, 1), (0, 1)), ("case-b", (2, 3), (0, 1)),
                                          ("case-c", (4, 5), (0, 2)))]


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def source_frames(case: Path) -> list[np.ndarray]:
    return [frame for clip in sorted(case.glob("clip*.mp4")) for frame in decode(clip)]


def recognised(detector: TextDetector, yuv: np.ndarray) -> list[str]:
    """Every line of text that detection + recognition read on a whole output frame."""
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    bgr = frame.to_ndarray(format="bgr24")
    texts = []
    for box in detector.boxes(frame.reformat(width=640, height=352, format="bgr24").to_ndarray(),
                              (WIDTH / 640, HEIGHT / 352)):
        text, _ = detector.read(bgr[box.y0:box.y1, box.x0:box.x1])
        texts.append(text.lower())
    return texts


def secrets(clip: PlantedClip) -> list[str]:
    """Pieces of the planted personal data that must not be readable: surname, birth year, ID digits."""
    name = next(line.text for line in clip.lines if line.kind == "name")
    dob = next(line.text for line in clip.lines if line.kind == "dob")
    pid = next(line.text for line in clip.lines if line.kind == "id")
    surname = name.split(",")[0] if "," in name else name.split()[-1]
    return [surname.lower().split()[-1], dob[-4:], pid.split()[-1][-5:]]


def filled(yuv: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    luma = yuv[:HEIGHT][y0:y1, x0:x1].astype(np.int16)
    return float(np.abs(luma - FILL_Y).mean()) <= 3 and float(np.percentile(np.abs(luma - FILL_Y), 95)) <= 12


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    """Processed cases by (case folder, mode, options), each rendered once for the module."""
    done: dict[tuple, dict] = {}

    def get(case: Path, mode: str, **extra: object) -> dict:
        key = (case, mode, tuple(sorted(extra.items())))
        if key not in done:
            done[key] = run(case, tmp_path_factory.mktemp("out"), mode, **extra)
        return done[key]
    return get


def run(case: Path, out: Path, mode: str, **extra: object) -> dict:
    options = ProcessOptions(out_dir=out / "shared", archive_dir=out / "archive", mode=mode, detector="none",
                             **extra)  # type: ignore[arg-type]
    result = process_case(CaseRequest(case), options)
    assert result.status == "ok", result.error
    assert result.report is not None and result.output is not None
    return {"report": json.loads(result.report.read_text(encoding="utf-8")), "output": result.output}


@pytest.mark.parametrize("mode", ["fast", "advanced"])
def test_planted_overlays_masked_in_every_frame(cases, detector, rendered, mode):
    for case, planted in cases:
        done = rendered(case, mode)
        report, frames = done["report"], decode(done["output"])
        source = source_frames(case)
        assert len(frames) == len(source) == FRAMES * len(planted)
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["overlay-fill"]["passed"] and checks["overlay-text"]["passed"]
        assert report["overlays"]["checked_output_frames"]
        if mode == "fast":
            assert any("burned-in text" in note for note in report["output"]["notes"])
        regions = [OverlayRegion.from_json(r) for r in report["overlays"]["regions"]]
        for number, clip in enumerate(planted):
            first = number * FRAMES
            for index in range(first, first + FRAMES):
                for kind, box in clip.boxes.items():
                    assert filled(frames[index], box), (case.name, STYLES[clip.style].name, kind, index)
            for index in (first + 1, first + FRAMES - 2):
                read = " ".join(recognised(detector, frames[index]))
                for secret in secrets(clip):
                    assert secret not in read, (case.name, STYLES[clip.style].name, secret, read)
        # Outside the masked regions the in-body picture is what the source showed (up to re-encoding).
        outside = np.ones((HEIGHT, WIDTH), bool)
        for region in regions:
            if region.masked:
                outside[region.box.y0:region.box.y1, region.box.x0:region.box.x1] = False
        assert outside.mean() > 0.75, "masks must cover the overlays, not the picture"
        for index in range(0, len(frames), 7):
            diff = np.abs(frames[index][:HEIGHT].astype(np.int16) - source[index][:HEIGHT].astype(np.int16))
            assert diff[outside].mean() < 2.0, (case.name, index, diff[outside].mean())


def test_device_settings_kept_only_when_asked(cases, rendered):
    case, planted = cases[0]
    kept = rendered(case, "advanced", keep_device_settings=True)
    masked = rendered(case, "advanced")
    kept_frames, masked_frames = decode(kept["output"]), decode(masked["output"])
    for number, clip in enumerate(planted):
        index = number * FRAMES + 10
        assert not filled(kept_frames[index], clip.boxes["settings"])
        assert filled(masked_frames[index], clip.boxes["settings"])
        for kind in ("name", "dob", "id"):
            assert filled(kept_frames[index], clip.boxes[kind])
    visible = [r for r in kept["report"]["overlays"]["regions"] if not r["masked"] and r["kind"] == "overlay"]
    assert visible and all("device-settings" in r["labels"] for r in visible)
    assert kept["report"]["settings"]["keep_device_settings"] is True


def test_masking_off_leaves_the_picture_and_says_so(cases, tmp_path):
    case, planted = cases[2]
    done = run(case, tmp_path, "fast", mask_overlays=False)
    frames = decode(done["output"])
    assert not filled(frames[5], planted[0].boxes["name"])
    assert done["report"]["overlays"]["masking"] is False
    assert done["report"]["output"]["method"] == "stream-copy"
    assert not any(c["name"].startswith("overlay") for c in done["report"]["checks"])


def test_check_fails_when_text_is_left_in_a_region(cases, detector):
    """The output check run on an unmasked picture: both overlay checks must fail."""
    case, _ = cases[2]
    plan = plan_join(probe_case(discover_case(case)))
    overlays = find_overlays(plan, detector=detector)
    assert overlays.masked
    unmasked = RenderResult("stream-copy", "h264", FRAMES, Fraction(25), WIDTH, HEIGHT)
    checks, frames = verify_overlays(case / "clip1.mp4", overlays, unmasked, SegmentSet(), Redaction.BLACK, FRAMES,
                                     (WIDTH, HEIGHT, Fraction(25)), detector)
    assert frames
    assert [c.passed for c in checks] == [False, False]
    assert "text found in a masked region" in checks[1].detail


def test_check_stops_with_an_error_when_cancelled(cases, detector):
    """Cancelling the output check raises CancelledError (it once stopped quietly with fewer frames checked)."""
    case, _ = cases[2]
    overlays = find_overlays(plan_join(probe_case(discover_case(case))), detector=detector)
    assert overlays.masked
    output = RenderResult("stream-copy", "h264", FRAMES, Fraction(25), WIDTH, HEIGHT)
    with pytest.raises(CancelledError):
        verify_overlays(case / "clip1.mp4", overlays, output, SegmentSet(), Redaction.BLACK, FRAMES,
                        (WIDTH, HEIGHT, Fraction(25)), detector, cancel=lambda: True)


def test_text_that_moves_with_the_scene_is_not_an_overlay(tmp_path, detector):
    """Text drawn at a new place in every frame never stands still: nothing masks it."""
    from endoshare.sample import write_clip
    from overlay_media import Line, draw, inbody

    def frames():
        for index in range(FRAMES):
            line = Line("SCALE 10 20 30 mm", "scene", 0.25 + 0.006 * index, 0.45 + 0.004 * index)
            yield draw(inbody(index, WIDTH, HEIGHT, 3, Fraction(25)), (line,), STYLES[0])

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), gop=25, options={"crf": "20"})
    plan = plan_join(probe_case(discover_case(tmp_path / "case")))
    overlays = find_overlays(plan, detector=detector)
    moving = [r for r in overlays.regions if r.box.x0 > WIDTH * 0.2 and r.box.y0 > HEIGHT * 0.35
              and r.box.width > 60]
    assert all(r.kind == "transient" and not r.masked for r in moving)
    assert not overlays.masked


def test_banner_between_two_old_samples_is_found(tmp_path, detector):
    """A banner shown for 30 s in the middle of a minute-long clip (the finder once sampled every two
    minutes and saw only the clip's ends): it is masked while it shows, and the picture before it is not."""
    from endoshare.sample import write_clip
    from overlay_media import Line, draw, inbody

    rate, seconds = 5, 60
    banner = (Line("SCHNEIDER, Maria  04.11.1958", "name", 0.05, 0.82),)

    def frames():
        for index in range(rate * seconds):
            picture = inbody(index * 5, WIDTH, HEIGHT, 7, Fraction(25))     # the scene moves as at 25 fps
            yield draw(picture, banner, STYLES[0]) if 15 * rate <= index < 45 * rate else picture

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), rate=Fraction(rate), gop=rate, options={"crf": "20"})
    plan = plan_join(probe_case(discover_case(tmp_path / "case")))
    overlays = find_overlays(plan, detector=detector)
    x0, y0, x1, y1 = text_boxes(banner, STYLES[0], WIDTH, HEIGHT)["name"]
    for index in range(15 * rate, 45 * rate):
        assert any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(index)), index
    assert not overlays.boxes_at(2 * rate) and not overlays.boxes_at(58 * rate)


def test_a_one_frame_clip_is_read_whole(tmp_path, detector):
    """A clip of a single picture: nothing tells standing text from the scene, so all text it shows is read
    and masked (from the one picture decoded for it)."""
    from endoshare.sample import write_clip
    from overlay_media import Line, draw, inbody

    line = (Line("MUELLER, Hans  12.03.1961", "name", 0.05, 0.08),)
    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", [draw(inbody(0, WIDTH, HEIGHT, 5, Fraction(25)), line, STYLES[0])],
               gop=25, options={"crf": "20"})
    overlays = find_overlays(plan_join(probe_case(discover_case(tmp_path / "case"))), detector=detector)
    x0, y0, x1, y1 = text_boxes(line, STYLES[0], WIDTH, HEIGHT)["name"]
    assert any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(0)), overlays


def test_banner_where_a_paused_scene_was_read_before(tmp_path, detector):
    """The scene pauses for the first 25 s (its tissue stands still and is read), then moves; a banner
    shows from 28 s to 56 s over that same tissue: it must be read afresh and masked."""
    from endoshare.sample import write_clip
    from overlay_media import Line, draw, inbody

    rate = 5
    banner = (Line("PID 40417731  NAKAMURA", "id", 0.3, 0.45),)

    def frames():
        for index in range(rate * 60):
            picture = inbody(max(index, 25 * rate) * 5, WIDTH, HEIGHT, 11, Fraction(25))
            yield draw(picture, banner, STYLES[0]) if 28 * rate <= index < 56 * rate else picture

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), rate=Fraction(rate), gop=rate, options={"crf": "20"})
    overlays = find_overlays(plan_join(probe_case(discover_case(tmp_path / "case"))), detector=detector)
    x0, y0, x1, y1 = text_boxes(banner, STYLES[0], WIDTH, HEIGHT)["id"]
    for index in range(28 * rate, 56 * rate):
        assert any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(index)), index


def test_a_ticking_clock_is_masked_all_along(tmp_path, detector):
    """Recorder date and time, the seconds changing between every two keyframes read (10 s apart): the
    strokes that change must not make it look like moving text."""
    from endoshare.sample import write_clip
    from overlay_media import Line, draw, inbody

    rate = 5

    def line(index: int) -> tuple[Line, ...]:
        second = index // rate
        return (Line(f"12.03.2024 14:{23 + second // 60:02d}:{second % 60:02d}", "time", 0.62, 0.04),)

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", (draw(inbody(i * 5, WIDTH, HEIGHT, 7, Fraction(25)), line(i), STYLES[0])
                                                for i in range(rate * 60)),
               rate=Fraction(rate), gop=rate, options={"crf": "20"})
    overlays = find_overlays(plan_join(probe_case(discover_case(tmp_path / "case"))), detector=detector)
    for index in range(0, rate * 60, 3):
        x0, y0, x1, y1 = text_boxes(line(index), STYLES[0], WIDTH, HEIGHT)["time"]
        assert any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(index)), index


def test_static_instrument_and_slow_tissue_are_not_masked(tmp_path, detector):
    """The demo case (synthetic tissue drifting slowly, instrument shafts that do not move): no mask."""
    from endoshare.sample import make_sample_case

    case = make_sample_case(tmp_path).folder
    plan = plan_join(probe_case(discover_case(case)))
    overlays = find_overlays(plan, detector=detector)
    assert not overlays.masked, [r.to_json() for r in overlays.masked]


def test_still_map_keeps_standing_strokes_only():
    """The still map: edges present in both pictures at the same place (luma or chroma) survive; tissue
    that moved and a flat picture leave nothing."""
    from endoshare.overlay.find import analysis_picture, areas_to_read, still_blocks, still_map
    from overlay_media import inbody

    def picture(index: int, text_colour: tuple[int, int, int]) -> av.VideoFrame:
        rgb = np.array(inbody(index, WIDTH, HEIGHT, 3, Fraction(25)))      # tissue, 10 s apart
        rgb[140:160, 240:400:6] = text_colour                                # vertical strokes
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")

    for colour in ((255, 255, 255), (0, 200, 0)):       # white, and green of about the tissue's brightness
        a, b = analysis_picture(picture(0, colour), 1), analysis_picture(picture(250, colour), 1)
        still = still_map(a, b)
        assert still[140:160, 240:400].mean() > 0.15, colour
        outside = still.copy()
        outside[136:164, 236:404] = False
        assert outside.mean() < 0.03, colour      # the scope's rim stands still too
        blocks = still_blocks(still)
        areas = areas_to_read(blocks, blocks)      # the strokes' area, and arcs of the scope's rim
        assert any(x0 * 8 <= 240 and x1 * 8 >= 400 and y0 * 8 <= 140 and y1 * 8 >= 160 and y1 - y0 <= 6
                   for x0, y0, x1, y1 in areas), areas
    flat = analysis_picture(av.VideoFrame.from_ndarray(np.full((360, 640, 3), 90, np.uint8), format="rgb24"), 1)
    assert not still_map(flat, flat).any()
    # A pattern shifted by its own period (the test suite's barcode clips: a checkerboard whose colours
    # swap) keeps every edge in place while every pixel changes: its strokes correlate, but it does not
    # stand still.
    from endoshare.overlay.find import STILL_EDGES, Analysis, box_similarity, still_edge_share
    cells = (np.indices((36, 64)).sum(axis=0) % 2).astype(bool)
    board = np.where(np.kron(cells, np.ones((10, 10), bool))[:, :, None], (200, 60, 60), (60, 60, 200))

    def board_picture(swap: bool) -> np.ndarray:
        rgb = np.ascontiguousarray(np.roll(board, 10 if swap else 0, axis=1).astype(np.uint8))
        return analysis_picture(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"), 1)

    a, b = Analysis.of(board_picture(False)), Analysis.of(board_picture(True))
    box = Box(0, 0, 640, 40)
    assert box_similarity(a, b, box, 1) > 0.9
    assert still_edge_share(a, b, box, 1) < STILL_EDGES <= still_edge_share(a, a, box, 1)


def test_detector_runs_without_network(monkeypatch):
    """The models come from the installed wheel: no socket may be opened to load or run them."""
    def refuse(*args, **kwargs):
        raise AssertionError("the text detector tried to use the network")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    detector = TextDetector()
    picture = np.zeros((64, 256, 3), np.uint8)
    picture[20:40, 20:200] = 255
    assert isinstance(detector.boxes(picture), list)
    assert detector.read(picture)[0] is not None
    record = (model_dir().parent.parent / "rapidocr-").as_posix()
    assert (model_dir() / "PP-OCRv6_det_small.onnx").is_file()
    installed = list(model_dir().parent.parent.glob("rapidocr-*.dist-info/RECORD"))
    assert installed, record
    listed = installed[0].read_text(encoding="utf-8")
    assert "rapidocr/models/PP-OCRv6_det_small.onnx" in listed and "rapidocr/models/PP-OCRv6_rec_small.onnx" in listed


def test_lines_are_recognised_in_runs_of_about_one_width(detector):
    """A short line is not padded to the width of a long one (the recogniser's cost grows with the padded
    width): crops are recognised in runs of similar widths, each read as it would be alone."""
    from PIL import Image, ImageDraw, ImageFont

    def line(text: str) -> np.ndarray:
        image = Image.new("RGB", (12 * len(text) + 16, 32), (20, 20, 20))
        ImageDraw.Draw(image).text((8, 4), text, fill=(255, 255, 255), font=ImageFont.load_default(20))
        return np.asarray(image)[:, :, ::-1].copy()

    crops = [line("ID 4417"), line("SCHNEIDER, Johanna  DOB 15.04.1953"), line("ID 4418")]
    detector.read(crops[0])         # the recogniser loaded
    widths = []
    real = detector._rec

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def run(self, outputs, feeds):
            widths.append(next(iter(feeds.values())).shape[::3])
            return real.run(outputs, feeds)
    detector._rec = Counting()
    try:
        together = detector.read_many(crops)
    finally:
        detector._rec = real
    (alone, long_width), (pair, short_width) = sorted(widths)       # (crops in the run, padded width)
    assert (alone, pair) == (1, 2) and short_width < long_width / 2, widths
    assert [text for text, _ in together] == [detector.read(crop)[0] for crop in crops]
    assert together[0][0] == "ID 4417" and together[2][0] == "ID 4418"


def test_regions_round_trip_and_mask_geometry():
    region = OverlayRegion(Box(10, 4, 51, 23).grown(4, 64, 32), 0, 10, "overlay", ("name-like",), True, (0, 5))
    assert region.box == Box(6, 0, 56, 28)
    overlays = OverlaySet.of([region, OverlayRegion(Box(0, 0, 8, 8), 5, 7, "transient", masked=False)], [0, 5])
    assert OverlaySet.from_json(json.loads(json.dumps(overlays.to_json()))) == overlays
    assert overlays.boxes_at(9) == (region.box,) and overlays.boxes_at(10) == ()
    assert overlays.frames() == SegmentSet.of([(0, 10)])
    frame = av.VideoFrame.from_ndarray(np.full((48, 64), 200, np.uint8), format="yuv420p")
    out = mask_frame(frame, [Box(3, 3, 9, 9)]).to_ndarray()
    assert (out[2:10, 2:10] == FILL_Y).all() and out[:32][11:, 11:].min() == 200 and out[:2].min() == 200
    with pytest.raises(ValueError):
        OverlayRegion(Box(0, 0, 4, 4), 5, 5)


def test_pictures_with_an_odd_number_of_chroma_rows():
    """160x90 (45 chroma rows: the U plane ends in the middle of a packed row) is masked and analysed."""
    from endoshare.overlay.find import analysis_picture
    from endoshare.overlay.mask import yuv_planes

    frame = av.VideoFrame.from_ndarray(np.full((90 * 3 // 2, 160), 200, np.uint8), format="yuv420p")
    out = mask_frame(frame, [Box(10, 10, 30, 20)])
    y = out.to_ndarray()[:90]
    assert (y[10:20, 10:30] == FILL_Y).all() and y[40:].min() == 200
    _, u, v = yuv_planes(out.to_ndarray(), 160, 90)
    assert (u[5:10, 5:15] == 128).all() and (v[5:10, 5:15] == 128).all() and u[20:].min() == 200
    assert analysis_picture(frame, 1).shape == (90, 160, 3)


def test_stroke_similarity_tells_standing_from_moving_text():
    rng = np.random.default_rng(0)
    text = (rng.random((20, 80)) > 0.7).astype(np.uint8) * 255
    crop = np.repeat(text[:, :, None], 3, axis=2)
    other = np.repeat(np.roll(text, 7, axis=1)[:, :, None], 3, axis=2)
    assert stroke_similarity(crop, crop // 2 + 40) > 0.9
    assert stroke_similarity(crop, other) < 0.6


@pytest.mark.parametrize("text, labels", [
    ("MUELLER, Hans-Peter", {"name-like"}), ("DOB 12.03.1961", {"date"}), ("ID 004512873", {"id"}),
    ("Insuffl 12 mmHg", {"device-settings"}), ("", {"unreadable"}),
])
def test_classify_for_the_report(text, labels):
    assert labels <= set(classify(text))


def test_only_device_settings_needs_confidence_and_nothing_else():
    assert only_device_settings("Insuffl 12 mmHg  Flow 8 l/min", 0.95)
    assert not only_device_settings("Insuffl 12 mmHg  Flow 8 l/min", 0.5)
    assert not only_device_settings("Flow 8 l/min MUELLER", 0.99)
    assert not only_device_settings("12 mmHg 12.03.1961", 0.99)


def test_options_reach_the_queue_record_and_the_cli(tmp_path, capsys):
    options = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a", mask_overlays=False,
                             keep_device_settings=True)
    assert options_from_record(json.loads(json.dumps(options_to_record(options)))) == options
    old = options_to_record(ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a"))
    del old["mask_overlays"], old["keep_device_settings"]
    assert options_from_record(old).mask_overlays is True
    # A damaged record is refused by the one validation, never read as "keep the device settings".
    for name, damaged in (("mask_overlays", "false"), ("keep_device_settings", "false"), ("mask_overlays", 0)):
        with pytest.raises(ValueError, match=name):
            options_from_record({**old, name: damaged})
    with pytest.raises(SystemExit):
        cli_main(["process", "--help"])
    assert "--no-overlay-mask" in capsys.readouterr().out


#: Recorder text as colonoscopy recorders burn it in (video standard, bitrate, date, time, counters).
RECORDER_LINES = (Line("VIDEO 1080i  8.0 Mbit", "settings", 0.04, 0.05), Line("2015/06/12", "date", 0.78, 0.05),
                  Line("14:22:07", "time", 0.78, 0.10), Line("DROP 0  BUF 12", "settings", 0.04, 0.90))


def recorder_pictures(source: str) -> list[np.ndarray]:
    """Four 1080p pictures with recorder text: generated in-body pictures with :data:`RECORDER_LINES`
    drawn on them, or real colonoscopy frames of the development data (no patient data)."""
    from PIL import Image

    if source == "synthetic":
        return [draw(synthetic.inbody_frame(np.random.default_rng(40 + i), 1920, 1080, 0.0), RECORDER_LINES,
                     STYLES[0]) for i in range(4)]
    assert DEV_DATA is not None
    files = sorted((DEV_DATA / "frames").glob("nvidia-holoscan__holohub__colonoscopy_segmentation_testing_000*.png"))
    assert len(files) >= 4, f"the development data lacks the colonoscopy recorder frames in {DEV_DATA}"
    return [np.asarray(Image.open(p).convert("RGB")) for p in files[:4]]


@pytest.mark.parametrize("source", picture_sources())
def test_real_recorder_text_is_masked(tmp_path, detector, source):
    """1080p frames with burned-in recorder text (video standard, bitrate, date, time, counters; no
    patient data), generated and, when present, real: after processing, recognition reads none of it."""
    from endoshare.sample import write_clip

    pictures = recorder_pictures(source)
    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", (pictures[i // 3] for i in range(12)), gop=6, options={"crf": "20"})
    before = " ".join(recognised_at(detector, decode(tmp_path / "case" / "clip.mp4")[7]))
    assert "2015" in before and "mbit" in before          # the text is there, and readable
    done = run(tmp_path / "case", tmp_path / "out", "advanced")
    after = " ".join(recognised_at(detector, decode(done["output"])[7]))
    for secret in ("2015", "mbit", "video", "drop", "buf"):
        assert secret not in after, (secret, after)


def recognised_at(detector: TextDetector, yuv: np.ndarray) -> list[str]:
    """Like :func:`recognised`, for a picture of any size (read at the finder's detector size)."""
    from endoshare.overlay.text import detector_size

    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    width, height = frame.width, frame.height
    det_w, det_h = detector_size(width, height)
    bgr = frame.to_ndarray(format="bgr24")
    return [detector.read(bgr[b.y0:b.y1, b.x0:b.x1])[0].lower()
            for b in detector.boxes(frame.reformat(width=det_w, height=det_h, format="bgr24").to_ndarray(),
                                    (width / det_w, height / det_h))]


def test_output_frames_map_back_through_cuts_and_rate_changes():
    from endoshare.overlay.verify import _OutputMap

    cut = _OutputMap(50, SegmentSet.of([(10, 20)]), Redaction.CUT,
                     RenderResult("re-encode", "h264", 40, Fraction(25), 64, 64), Fraction(25))
    assert [cut.timeline(w) for w in (0, 9, 10, 39)] == [0, 9, 20, 49]
    assert cut.output_near(15) == 10 and cut.output_near(49) == 39 and cut.output_near(50) is None
    halved = _OutputMap(50, SegmentSet(), Redaction.BLACK,
                        RenderResult("re-encode", "h264", 25, Fraction(25), 64, 64), Fraction(50))
    assert [halved.timeline(w) for w in (0, 1, 24)] == [0, 2, 48]
    assert halved.output_near(3) == 2


def test_text_box_counts_only_for_the_part_outside_the_masks() -> None:
    """The check's rule: in a frame whose masks are solid black, a text box inside them is the detector
    reading the black fill (the demo case's tissue made it do so); a box reaching out of them is text left
    visible."""
    from endoshare.overlay.text import Box
    from endoshare.overlay.verify import OUTSIDE_SHARE, _share_outside

    masks = [Box(100, 40, 160, 80), Box(150, 40, 220, 80)]        # overlapping masks
    assert _share_outside(Box(110, 45, 210, 75), masks) == 0.0    # the fill itself
    sticking_out = Box(180, 45, 260, 75)                          # a name's last letters beyond the mask
    assert _share_outside(sticking_out, masks) == pytest.approx(0.5)
    assert _share_outside(sticking_out, masks) >= OUTSIDE_SHARE
    assert _share_outside(Box(0, 0, 10, 10), masks) == 1.0
    # The detector reports a box grown around the pixels it took for text: the rule looks at those pixels.
    from endoshare.overlay.verify import _kernel
    kernel = _kernel(Box(192, 50, 243, 86))       # the demo case: a black mask read as text
    assert kernel.x0 > 192 and kernel.x1 < 243 and kernel.y0 > 50 and kernel.y1 < 86
    assert _share_outside(kernel, [Box(196, 56, 238, 80)]) < OUTSIDE_SHARE


@pytest.mark.parametrize("width, height", [(10, 10), (60, 20), (89, 19), (150, 12), (300, 30), (40, 6)])
def test_text_kernel_is_recovered_from_the_grown_box(width: int, height: int) -> None:
    """The detector grows each text kernel by w*h*1.6/(2(w+h)) on every side; the check shrinks the box back:
    wide, flat boxes (a black mask's edge taken for a text line) too, where a fixed-point iteration
    oscillated and gave back the whole grown box (a false "text left visible" on a correct output)."""
    from endoshare.overlay.text import UNCLIP_RATIO
    from endoshare.overlay.verify import _kernel
    grow = width * height * UNCLIP_RATIO / (2 * (width + height))
    found = Box(100 - math.floor(grow), 100 - math.floor(grow), 100 + width + math.ceil(grow),
                100 + height + math.ceil(grow))
    kernel = _kernel(found)
    assert abs(kernel.x0 - 100) <= 1 and abs(kernel.y0 - 100) <= 1, (found, kernel)
    assert abs(kernel.x1 - (100 + width)) <= 1 and abs(kernel.y1 - (100 + height)) <= 1, (found, kernel)
