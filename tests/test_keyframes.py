"""Keyframes decoded on several decoders at once: the same pictures, pts and order as one decoder fed the
same keyframe packets, on every decoder in worker threads, with bounded look-ahead and prompt cancellation."""

from __future__ import annotations

import hashlib
import threading
from fractions import Fraction
from pathlib import Path

import av
import pytest

from endoshare.cases import discover_case
from endoshare.detect.builtin import BuiltinDetector
from endoshare.detect.sampling import ReadSettings, coarse_scan
from endoshare.errors import CancelledError
from endoshare.media import keyframes
from endoshare.media.join import plan_join
from endoshare.media.keyframes import AHEAD, KeyframeReader
from endoshare.overlay.find import OverlayFinder, OverlayOptions
from endoshare.pipeline import probe_case
from endoshare.sample import write_clip
from media import ffmpeg
from overlay_media import STYLES, Line, draw, inbody, text_boxes

SOURCE = ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=8,"
          "hue=H=2*PI*t/3")   # the colours turn, so no two keyframes are alike
#: Encodings a recorder may write: closed GOPs with B-frames, open GOPs (non-IDR keyframes with a
#: recovery point), scene cuts (irregular GOPs), interlaced field coding, MPEG-TS (Annex B), HEVC, MPEG-2.
VARIANTS = {
    "closed.mp4": ("-c:v", "libx264", "-g", "25", "-bf", "2", "-colorspace", "bt709", "-color_range", "pc"),
    "open-gop.mp4": ("-c:v", "libx264", "-g", "25", "-bf", "3", "-x264-params", "open-gop=1:keyint-min=25"),
    "scenecut.ts": ("-c:v", "libx264", "-g", "60", "-sc_threshold", "40", "-f", "mpegts"),
    "interlaced.ts": ("-c:v", "libx264", "-g", "25", "-flags", "+ildct+ilme", "-x264-params", "tff=1",
                      "-f", "mpegts"),
    "hevc.mp4": ("-c:v", "libx265", "-g", "25", "-x265-params", "log-level=error"),
    "hevc-open.ts": ("-c:v", "libx265", "-g", "25", "-x265-params", "log-level=error:open-gop=1", "-f", "mpegts"),
    "mpeg2.mpg": ("-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-f", "vob"),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keyframes") / request.param
    ffmpeg(*SOURCE, "-pix_fmt", "yuv420p", *VARIANTS[request.param], path)
    return path


def picture_digest(frame: av.VideoFrame) -> str:
    digest = hashlib.sha256()
    for plane in frame.planes:
        digest.update(bytes(plane))
    return digest.hexdigest()


def full_decode(path: Path) -> list[tuple[int, str, tuple[object, ...]]]:
    """The keyframes' pictures as a plain decode of every frame shows them (an intra picture does not depend
    on the loop filter of others, so it is skipped here as the keyframe readers skip it), in order."""
    with av.open(str(path)) as container:
        keys = {p.pts for p in container.demux(video=0) if p.is_keyframe and not p.is_discard and p.size}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"skip_loop_filter": "all"}
        return [(int(f.pts), picture_digest(f), properties(f)) for f in container.decode(stream) if f.pts in keys]


def properties(frame: av.VideoFrame) -> tuple[object, ...]:
    return (frame.format.name, frame.color_range, frame.colorspace, frame.interlaced_frame)


def test_the_pictures_pts_and_order_of_a_full_decode(clip: Path) -> None:
    """A single decoder fed only the keyframe packets (what both readers did before) fails this on open GOPs
    of H.264: it gave 3 of the 8 keyframes, last first."""
    expected = full_decode(clip)
    assert len(expected) >= 3, expected      # several keyframes, or the comparison shows little
    for decoders in (1, 2, 3):
        with KeyframeReader(clip, skip_loop_filter=True, decoders=decoders) as reader:
            got = [(pts, picture_digest(frame), properties(frame)) for pts, frame in reader]
        assert got == expected, (clip.name, decoders)


def test_keyframes_are_decoded_two_at_a_time_in_worker_threads(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both = threading.Barrier(2, timeout=30)       # passed only when two decodings run at the same time
    threads = set()
    decode = keyframes.decode_packet

    def meeting(context: av.video.codeccontext.VideoCodecContext, packet: av.Packet | None,
                path: Path) -> list[av.VideoFrame]:
        if packet is not None and len(threads) < 2:
            threads.add(threading.current_thread().name)
            both.wait()
        return decode(context, packet, path)

    monkeypatch.setattr(keyframes, "decode_packet", meeting)
    with KeyframeReader(clip, decoders=2) as reader:
        assert len(list(reader)) >= 3
    assert len(threads) == 2 and threading.current_thread().name not in threads


def test_decoding_stays_a_few_keyframes_ahead_of_the_caller(clip: Path) -> None:
    seen = []

    def count(packet: av.Packet) -> None:
        seen.append(packet.is_keyframe)

    with KeyframeReader(clip, decoders=2, on_packet=count) as reader:
        for taken, _ in enumerate(reader, start=1):
            # The keyframe packets demuxed beyond those handed over: decoding or decoded, waiting.
            assert sum(seen) - taken <= AHEAD * 2 + 1


def test_cancelling_stops_the_demuxing_and_the_decoders_at_once(clip: Path) -> None:
    total = sum(1 for _ in av.open(str(clip)).demux(video=0))
    seen = []

    def cancel_at_half(packet: av.Packet) -> None:
        seen.append(packet)
        if len(seen) == total // 2:
            raise CancelledError("stop")

    with pytest.raises(CancelledError), KeyframeReader(clip, decoders=2, on_packet=cancel_at_half) as reader:
        for _ in reader:
            pass
    assert len(seen) == total // 2
    assert not [t for t in threading.enumerate() if t.name.startswith("keyframes")]


def test_detection_coarse_pass_is_cancelled_mid_way(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    ffmpeg(*SOURCE, "-pix_fmt", "yuv420p", *VARIANTS["closed.mp4"], path)
    asked = []

    def cancel() -> bool:
        asked.append(True)
        return len(asked) >= 2

    with pytest.raises(CancelledError, match="clip.mp4"):
        coarse_scan(path, BuiltinDetector(), ReadSettings(), cancel=cancel)
    full = coarse_scan(path, BuiltinDetector(), ReadSettings())
    assert len(full.key_frames) == 8 and len(asked) < full.index.frame_count // 64 + 1


def test_detection_scores_every_keyframe_of_an_open_gop_clip(tmp_path: Path) -> None:
    """One decoder fed the keyframes alone scored 3 of these 8 (0, 25 and 50), and the finder fed by it saw
    them last first."""
    path = tmp_path / "open-gop.mp4"
    ffmpeg(*SOURCE, "-pix_fmt", "yuv420p", *VARIANTS["open-gop.mp4"], path)
    scan = coarse_scan(path, BuiltinDetector(), ReadSettings())
    assert scan.key_frames.tolist() == list(range(0, 200, 25))


def test_a_banner_in_an_open_gop_clip_is_masked(tmp_path: Path) -> None:
    """The overlay finder's own pass on an open-GOP H.264 clip: with one decoder fed the keyframes alone it
    read 3 of the 6 keyframes, out of order, and left this patient ID unmasked on all 40 frames."""
    width, height, rate = 640, 360, 10
    banner = (Line("PID 40417731  NAKAMURA", "id", 0.3, 0.45),)

    def frames():  # type: ignore[no-untyped-def]
        for index in range(12 * rate):
            picture = inbody(index * 3, width, height, 5, Fraction(25))
            yield draw(picture, banner, STYLES[0]) if 44 <= index < 84 else picture

    (tmp_path / "case").mkdir()
    write_clip(tmp_path / "case" / "clip.mp4", frames(), rate=Fraction(rate), gop=2 * rate,
               options={"crf": "20", "bf": "2", "x264-params": "open-gop=1"})
    finder = OverlayFinder(plan_join(probe_case(discover_case(tmp_path / "case"))), OverlayOptions())
    overlays = finder.run()
    assert finder.keyframes_read == 6 and overlays.samples == (0, 20, 40, 60, 80, 100)
    x0, y0, x1, y1 = text_boxes(banner, STYLES[0], width, height)["id"]
    for index in range(44, 84):
        assert any(b.x0 <= x0 and b.y0 <= y0 and b.x1 >= x1 and b.y1 >= y1 for b in overlays.boxes_at(index)), index
