"""The overlay finder looks at every keyframe: a short banner is masked, detection's keyframes feed it
without a second decode (the same regions as its own keyframe pass), and its memory does not grow with
the clip."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare.cases import discover_case
from endoshare.detect.case import detect_case
from endoshare.media.join import plan_join
from endoshare.overlay.find import ClipOverlays, OverlayFinder, OverlayOptions, find_overlays
from endoshare.overlay.regions import OverlaySet
from endoshare.overlay.text import TextDetector
from endoshare.pipeline import probe_case
from endoshare.sample import write_clip
from overlay_media import STYLES, Line, draw, inbody, patient_lines, text_boxes

WIDTH, HEIGHT = 640, 360


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector()


def covers(overlays: OverlaySet, frame: int, ink: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = ink
    return any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(frame))


def test_a_banner_of_two_gops_in_a_long_clip_is_masked(tmp_path: Path, detector: TextDetector) -> None:
    """A banner shown on two consecutive keyframes only (2 GOPs of 2 s), 34 s into a 60 s clip.  The
    finder once read the keyframes nearest every 10 s: the banner is on none of them (it was missed)."""
    rate, gop, seconds = 5, 10, 60
    first, last = 163, 183                  # shown on frames 163..182: keyframes 170 and 180
    banner = (Line("SCHNEIDER, Maria  04.11.1958", "name", 0.05, 0.82),)
    grid = {round(10 * rate * k / gop) * gop for k in range(seconds // 10 + 1)}    # the old 10 s samples
    assert not any(first <= k < last for k in grid)
    assert [k for k in range(0, rate * seconds, gop) if first <= k < last] == [170, 180]

    def frames():
        for index in range(rate * seconds):
            picture = inbody(index * 5, WIDTH, HEIGHT, 7, Fraction(25))     # the scene moves as at 25 fps
            yield draw(picture, banner, STYLES[0]) if first <= index < last else picture

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), rate=Fraction(rate), gop=gop, options={"crf": "20"})
    overlays = find_overlays(plan_join(probe_case(discover_case(tmp_path / "case"))), detector=detector)
    ink = text_boxes(banner, STYLES[0], WIDTH, HEIGHT)["name"]
    for index in range(first, last):
        assert covers(overlays, index, ink), (index, [r.to_json() for r in overlays.masked])
    # Masked from the keyframe before it was seen to the keyframe after: not the rest of the clip.
    assert all(160 <= r.start_frame and r.end_frame <= 191 for r in overlays.masked), overlays.masked
    assert len(overlays.samples) == rate * seconds // gop        # every keyframe was looked at


def banner_case(folder: Path, container_format: str | None = None, name: str = "clip.mp4") -> Path:
    """A 12 s clip (2 s GOPs, B-frames) with a recorder overlay all along and a banner from 4.4 s to 8.4 s."""
    lines = patient_lines(seed=1, layout=0)
    banner = (Line("PID 40417731  NAKAMURA", "id", 0.3, 0.45),)
    rate = 10

    def frames():
        for index in range(12 * rate):
            picture = draw(inbody(index * 3, WIDTH, HEIGHT, 5, Fraction(25)), lines, STYLES[1])
            yield draw(picture, banner, STYLES[0]) if 44 <= index < 84 else picture

    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / name, frames(), rate=Fraction(rate), gop=2 * rate, options={"crf": "20", "bf": "2"},
               container_format=container_format)
    return folder


def test_detection_feeds_the_finder_the_keyframes_it_decodes(tmp_path: Path, detector: TextDetector) -> None:
    """With detection running, the finder gets the keyframes the coarse pass decoded and decodes none
    itself; its regions are those of its own keyframe pass, on MP4 and on MPEG-TS alike."""
    mp4 = plan_join(probe_case(discover_case(banner_case(tmp_path / "mp4"))))
    alone = OverlayFinder(mp4, OverlayOptions(), detector)
    own = alone.run()
    assert alone.keyframes_read == 6 and own.masked

    fed = OverlayFinder(mp4, OverlayOptions(), detector)
    detect_case(mp4, "builtin", keyframes=fed.sink)
    from_detection = fed.run()
    assert fed.keyframes_read == 0
    assert from_detection == own

    ts = plan_join(probe_case(discover_case(banner_case(tmp_path / "ts", "mpegts", "clip.ts"))))
    assert find_overlays(ts, detector=detector).regions == own.regions


def test_a_scan_that_stops_half_way_is_read_again(tmp_path: Path, detector: TextDetector) -> None:
    """Keyframes fed by a detection pass that did not finish (no ``scanned``) are dropped: the finder
    reads that clip itself."""
    plan = plan_join(probe_case(discover_case(banner_case(tmp_path / "case"))))
    finder = OverlayFinder(plan, OverlayOptions(), detector)
    partial = finder.sink(plan.clips[0])
    with av.open(str(plan.clips[0].info.path)) as container:
        frame = next(container.decode(video=0))
        partial.keyframe(int(frame.pts or 0), frame)
    overlays = finder.run()
    assert finder.keyframes_read == 6
    assert overlays == find_overlays(plan, detector=detector)


def test_memory_does_not_grow_with_the_number_of_keyframes(tmp_path: Path, detector: TextDetector) -> None:
    """400 keyframes fed one by one: the finder keeps a fixed number of analysis pictures (all of them
    would be ~370 MB at 640x360), and the overlay standing all along is still masked over the whole clip."""
    lines = patient_lines(seed=2, layout=1)
    path = tmp_path / "case" / "clip.mp4"
    path.parent.mkdir()
    black = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    write_clip(path, [black] * 400, gop=1)      # the clip the plan describes: 400 frames, each a keyframe
    plan = plan_join(probe_case(discover_case(path.parent)))
    options = OverlayOptions(window=6)
    finder = OverlayFinder(plan, options, detector)
    clip: ClipOverlays = finder.sink(plan.clips[0])
    tissue = [np.asarray(inbody(k * 250, WIDTH + 64, HEIGHT, 9, Fraction(25))) for k in range(4)]

    def keyframe(k: int) -> av.VideoFrame:
        moving = np.ascontiguousarray(tissue[k % 4][:, (7 * k) % 64:(7 * k) % 64 + WIDTH])    # a scene that moves
        return av.VideoFrame.from_ndarray(draw(moving, lines, STYLES[0]), format="rgb24")

    tracemalloc.start()
    try:
        for k in range(40):
            clip.keyframe(k, keyframe(k))
        settled = tracemalloc.get_traced_memory()[0]
        for k in range(40, 400):
            clip.keyframe(k, keyframe(k))
            assert len(clip.window) <= options.window and len(clip.pairs) < options.window
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert grown < 8_000_000, grown       # a few bytes per keyframe and box; one picture is 0.9 MB
    clip.scanned(lambda pts: pts)
    overlays = finder.run()
    assert plan.total_frames == 400
    for kind, ink in text_boxes(lines, STYLES[0], WIDTH, HEIGHT).items():
        assert all(covers(overlays, k, ink) for k in range(400)), kind


def test_text_read_late_is_masked_back_to_where_it_began(tmp_path: Path, detector: TextDetector) -> None:
    """Half-transparent text over moving tissue is read only once it has stood for a while (8 s); with
    one keyframe a second and 3 analysis pictures kept, the pairs before them are judged by the still
    history of its blocks: it is masked from the clip's first frame."""
    rate = 5
    lines = patient_lines(seed=4, layout=0)
    style = STYLES[5]           # DejaVu Sans Bold, half transparent

    def frames():
        for index in range(rate * 20):
            yield draw(inbody(index * 12, WIDTH, HEIGHT, 13, Fraction(25)), lines, style)

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), rate=Fraction(rate), gop=rate, options={"crf": "20"})
    plan = plan_join(probe_case(discover_case(tmp_path / "case")))
    finder = OverlayFinder(plan, OverlayOptions(window=3), detector)
    found_late: list[int] = []
    clips = finder.sink

    def watched(clip):  # type: ignore[no-untyped-def]
        sink = clips(clip)
        look = sink._look

        def spy(frame, blocks, pair, stood, every_area=False):  # type: ignore[no-untyped-def]
            before = len(sink.clusters)
            look(frame, blocks, pair, stood, every_area)
            found_late.extend([pair] * (len(sink.clusters) - before))
        sink._look = spy  # type: ignore[method-assign]
        return sink
    finder.sink = watched  # type: ignore[method-assign]
    overlays = finder.run()
    assert max(found_late) >= 3, found_late     # some lines first read after the pictures then kept
    for kind, ink in text_boxes(lines, style, WIDTH, HEIGHT).items():
        assert all(covers(overlays, k, ink) for k in range(plan.total_frames)), (kind, overlays.masked)


def test_processing_a_case_reads_no_keyframe_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``process_case`` with the built-in detector hands its keyframes to the finder: the finder's own pass
    never runs, and the overlays are masked as the report says; without a detector the own pass runs."""
    import json

    from endoshare.pipeline import CaseRequest, ProcessOptions, process_case

    case = banner_case(tmp_path / "case")
    own_passes: list[str] = []
    scan = OverlayFinder._scan

    def counted(self, clip):  # type: ignore[no-untyped-def]
        own_passes.append(clip.info.path.name)
        return scan(self, clip)
    monkeypatch.setattr(OverlayFinder, "_scan", counted)
    reports = []
    for detector in ("builtin", "none"):
        options = ProcessOptions(out_dir=tmp_path / detector / "shared", archive_dir=tmp_path / detector / "archive",
                                 detector=detector)
        result = process_case(CaseRequest(case), options)
        assert result.status == "ok", result.error
        assert result.report is not None
        reports.append(json.loads(result.report.read_text(encoding="utf-8"))["overlays"])
    assert own_passes == ["clip.mp4"]           # only the run without a detector read the clip itself
    assert reports[0]["regions"] == reports[1]["regions"] and reports[0]["masked_regions"] > 0


def test_a_line_found_does_not_make_the_tissue_beside_it_be_read(tmp_path: Path, detector: TextDetector) -> None:
    """A line burned in next to the scope's rim while the scene pans back and forth: near each turn the rim
    and tissue barely move and join the line's still area.  The line, read once, must not vouch for them
    (the finder read that area again at every turn: 7 reads here, 85 % of the text detector's pixels on
    the benchmark case); the line is still masked over the whole clip."""
    from endoshare.synthetic import inbody_frame

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * 40, gop=1)
    plan = plan_join(probe_case(discover_case(tmp_path / "case")))
    scene = inbody_frame(np.random.default_rng(3), 2 * WIDTH, 2 * HEIGHT, 0.0).astype(np.float32)
    y, x = np.mgrid[0:2 * HEIGHT, 0:2 * WIDTH]
    scene[(x - WIDTH) ** 2 + (y - HEIGHT) ** 2 > (0.8 * HEIGHT) ** 2] = 0        # the scope's rim
    line = (Line("ID 13687617", "id", 0.6, 0.03),)
    noise = np.random.default_rng(4)
    finder = OverlayFinder(plan, OverlayOptions(), detector)
    sink = finder.sink(plan.clips[0])
    for k in range(40):
        pan, top = abs(k * 30 % 400 - 200), HEIGHT // 2 - 40 + (k % 3) * 2
        crop = scene[top:top + HEIGHT, 100 + pan:100 + pan + WIDTH]
        picture = draw(np.clip(crop + noise.normal(0, 3, crop.shape), 0, 255).astype(np.uint8), line, STYLES[0])
        sink.keyframe(k, av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24"))
    sink.scanned(lambda pts: pts)
    overlays = finder.run()
    assert finder.reads == 1, finder.reads
    ink = text_boxes(line, STYLES[0], WIDTH, HEIGHT)["id"]
    assert all(covers(overlays, index, ink) for index in range(40)), [r.to_json() for r in overlays.masked]


def test_keyframes_are_taken_on_the_finders_thread(tmp_path: Path, detector: TextDetector,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection hands a keyframe over and goes on decoding while the finder works on it (on a thread of
    its own, a few keyframes queued at most); what the work raised comes out with the case's regions."""
    import threading
    import time

    from endoshare.overlay import find

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * 8, gop=1)
    plan = plan_join(probe_case(discover_case(tmp_path / "case")))
    release, seen = threading.Event(), []
    real = find.analysis_picture

    def slow(frame: av.VideoFrame, factor: int) -> np.ndarray:
        seen.append(threading.current_thread() is not threading.main_thread())
        release.wait(10)
        if len(seen) == 3:
            raise ValueError("broken picture")
        return real(frame, factor)
    monkeypatch.setattr(find, "analysis_picture", slow)
    finder = OverlayFinder(plan, OverlayOptions(), detector)
    sink = finder.sink(plan.clips[0])
    frame = av.VideoFrame.from_ndarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8), format="rgb24")
    started = time.monotonic()
    for k in range(find.QUEUED_KEYFRAMES):      # one being taken, the others queued
        sink.keyframe(k, frame)
    assert time.monotonic() - started < 5        # not held up by the work (it waits for ``release``)
    release.set()
    sink.keyframe(find.QUEUED_KEYFRAMES, frame)
    sink.scanned(lambda pts: pts)
    with pytest.raises(ValueError, match="broken picture"):
        finder.run()
    assert seen and all(seen)
    with pytest.raises(RuntimeError, match="shutdown"):     # run() ended the finder's thread, even on error
        finder.worker.submit(print)


def test_a_finder_replaced_while_its_work_is_queued_is_dropped(tmp_path: Path, detector: TextDetector) -> None:
    """A clip's scan finished, its regions still to be made on the finder's thread, when a new scan of the
    clip began and stopped half-way: the clip is read again, not given the replaced finder's regions."""
    import threading

    plan = plan_join(probe_case(discover_case(banner_case(tmp_path / "case"))))
    finder = OverlayFinder(plan, OverlayOptions(), detector)
    first = finder.sink(plan.clips[0])
    with av.open(str(plan.clips[0].info.path)) as container:
        frames = [frame for frame in container.decode(video=0) if frame.key_frame]
    for frame in frames:
        first.keyframe(int(frame.pts or 0), frame)
    release = threading.Event()
    finder.worker.submit(release.wait, 10)          # the thread busy: the first scan's regions wait
    first.scanned(lambda pts: pts)
    finder.sink(plan.clips[0]).keyframe(int(frames[0].pts or 0), frames[0])    # a new scan, stopped half-way
    release.set()
    overlays = finder.run()
    with pytest.raises(RuntimeError, match="shutdown"):     # the finder's thread ended with run()
        finder.worker.submit(print)
    assert finder.keyframes_read == len(frames) == 6
    assert overlays == find_overlays(plan, detector=detector)
