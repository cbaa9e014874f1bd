"""Picture geometry and scan survive every mode, in copied and in re-encoded pictures alike."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from media import ffmpeg, process_spans

SPANS = [(30, 35)]          # inside the second group of pictures: that group is re-encoded in fast mode


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interlaced (top field first), anamorphic PAL (64:45), BT.709, 90°-rotated H.264 recording."""
    folder = tmp_path_factory.mktemp("geometry")
    plain = folder / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=352x288:rate=25:duration=4", "-vf",
           "setsar=64/45,setfield=tff,setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
           "-c:v", "libx264", "-g", "25", "-flags", "+ildct+ilme", "-pix_fmt", "yuv420p",
           "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv", plain)
    (folder / "case").mkdir()
    ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", folder / "case" / "clip.mp4")
    return folder / "case"


def pictures(path: Path) -> Counter[tuple[object, ...]]:
    """How many decoded pictures show each (pixel shape, colour, scan, rotation)."""
    seen: Counter[tuple[object, ...]] = Counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            seen[(stream.codec_context.sample_aspect_ratio, frame.color_primaries, frame.color_trc,
                  frame.colorspace, frame.color_range, frame.interlaced_frame, frame.rotation)] += 1
    return seen


def field_orders(path: Path) -> Counter[str]:
    """How many pictures FFmpeg shows as top field first (T), bottom first (B) or progressive (P): PyAV does
    not read a frame's field order."""
    shown = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo",
                            "-f", "null", "-"], capture_output=True, text=True, check=True, timeout=120).stderr
    return Counter(re.findall(r" i:([TBP]) ", shown))


@pytest.mark.parametrize("mode", ["fast", "advanced"])
def test_rotation_pixel_shape_colour_and_scan_are_kept(tmp_path: Path, case: Path, mode: str) -> None:
    source = pictures(case / "clip.mp4")
    assert len(source) == 1
    sar, primaries, trc, space, color_range, interlaced, rotation = next(iter(source))
    assert (sar, primaries, trc, space, color_range, interlaced, abs(rotation)) == \
        (Fraction(64, 45), 1, 1, 1, 1, True, 90)
    assert field_orders(case / "clip.mp4") == Counter({"T": 100})
    result, report = process_spans(case, tmp_path, SPANS, mode=mode)
    assert report["output"]["method"] == ("smart-render" if mode == "fast" else "re-encode")
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    # Every output picture, copied or re-encoded (black ones included), has the source's geometry and scan.
    assert pictures(result.output) == Counter({next(iter(source)): 100})
    # ... and its field order (black pictures came out bottom field first).
    assert field_orders(result.output) == Counter({"T": 100})


def test_pal_mpeg2_keeps_its_4_3_pixel_shape_when_re_encoded(tmp_path: Path) -> None:
    """A 4:3 PAL DVD recording (720x576, pixels 16:15) is re-encoded to H.264 (MPEG-2 is not spliced):
    shown 4:3, not 5:4."""
    case = tmp_path / "case"
    case.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=720x576:rate=25:duration=1", "-vf", "setsar=16/15",
           "-c:v", "mpeg2video", "-b:v", "6M", "-f", "vob", case / "VTS_01_1.VOB")
    result = process_case(CaseRequest(case), ProcessOptions(out_dir=tmp_path / "shared",
                                                            archive_dir=tmp_path / "archive", detector="none"))
    with av.open(str(result.output)) as container:
        stream = container.streams.video[0]
        next(container.decode(stream))
        assert stream.codec_context.sample_aspect_ratio == Fraction(16, 15)
        assert stream.codec_context.display_aspect_ratio == Fraction(4, 3)


def test_the_verifier_fails_an_output_that_lost_the_geometry(tmp_path: Path, case: Path) -> None:
    from dataclasses import replace

    from endoshare.media.join import plan_join
    from endoshare.media.probe import probe
    from endoshare.render.common import EncodeSettings, Redaction
    from endoshare.render.smart import render_smart
    from endoshare.timeline import SegmentSet
    from endoshare.verify import verify_output

    out = tmp_path / "out.mp4"
    result = render_smart(plan_join([probe(case / "clip.mp4")]), SegmentSet.of(SPANS), Redaction.BLACK,
                          EncodeSettings(), out)
    assert result.geometry is not None and result.geometry.sample_aspect_ratio == Fraction(64, 45)
    found = {c.name: c for c in verify_output(out, result)}
    assert found["geometry"].passed, found["geometry"].detail
    # A renderer that promised square pixels and BT.601 colours (what the source does not have) is caught.
    wrong = replace(result, geometry=replace(result.geometry, sample_aspect_ratio=None, colorspace=5))
    failed = {c.name: c for c in verify_output(out, wrong)}["geometry"]
    assert not failed.passed and "pixel shape" in failed.detail and "matrix" in failed.detail


def test_a_full_range_recording_is_spliced_and_keeps_its_range(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=4", "-vf", "setparams=range=pc",
           "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-color_range", "pc", case / "clip.mp4")
    result, report = process_spans(case, tmp_path, SPANS)
    assert report["output"]["method"] == "smart-render"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    with av.open(str(case / "clip.mp4")) as container:
        source = [f.to_ndarray() for f in container.decode(video=0)]
    with av.open(str(result.output)) as container:
        frames = list(container.decode(video=0))
    assert {f.color_range for f in frames} == {2}           # full range, copied and re-encoded alike
    # A picture of the re-encoded group keeps the source's sample values (not squeezed into 16-235).
    assert abs(int(frames[26].to_ndarray()[:240].max()) - int(source[26][:240].max())) <= 8
    assert all((frames[i].to_ndarray() == source[i]).all() for i in range(50, 100))   # copied groups


def test_a_full_range_recording_re_encoded_in_advanced_mode_is_converted_to_the_range_it_declares(
        tmp_path: Path) -> None:
    """Advanced mode writes limited range: a full-range source's samples must be converted, not copied into
    an output that players then show with crushed blacks and clipped whites."""
    case = tmp_path / "case"
    case.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-vf", "setparams=range=pc",
           "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuvj420p", "-color_range", "pc", case / "clip.mp4")
    with av.open(str(case / "clip.mp4")) as container:
        source = next(container.decode(video=0))
    assert source.format.name == "yuvj420p" and int(source.to_ndarray()[:240].max()) > 245
    result, report = process_spans(case, tmp_path, [(30, 35)], mode="advanced")
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    with av.open(str(result.output)) as container:
        first = next(container.decode(video=0))
    assert first.color_range in (0, 1)                      # limited range (unspecified means limited)
    luma = first.to_ndarray()[:240]
    # testsrc's white and black bars at 235 and 16 (the encoder rings a little at their edges).
    assert 230 <= np.percentile(luma, 99) <= 237 and 15 <= np.percentile(luma, 1) <= 20
