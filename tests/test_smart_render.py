"""Fast mode: only the groups of pictures that show a redacted frame are re-encoded, frame-exactly."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from endoshare.media.join import plan_join
from endoshare.media.nal import AvcConfig, read_ue
from endoshare.media.probe import probe
from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.render.common import Redaction
from endoshare.render.smart import plan_smart
from endoshare.sample import write_clip
from endoshare.timeline import SegmentSet
from media import barcode_clip, decoded_frames, ffmpeg, luma_max, process_spans, read_barcode

GOP = 25
# First frame; inside one GOP (shorter than a GOP); across the clip boundary at 100; two adjacent
# spans that meet at a GOP boundary (150); the very last frame.
SPANS = [(0, 1), (33, 40), (95, 108), (140, 150), (150, 153), (199, 200)]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smart") / "case"
    folder.mkdir()
    # x264 defaults: B-frames with pyramid, so presentation and decoding order differ.
    barcode_clip(folder / "clip1.mp4", range(0, 100), gop=GOP, options={"x264-params": "scenecut=0"})
    barcode_clip(folder / "clip2.mp4", range(100, 200), gop=GOP, options={"x264-params": "scenecut=0"})
    return folder


def render(tmp_path: Path, case: Path, redaction: Redaction) -> tuple[Path, dict]:
    result, report = process_spans(case, tmp_path, SPANS, redaction=redaction)
    return result.output, report


def source_frames(case: Path, pattern: str = "clip*.mp4") -> list[np.ndarray]:
    frames = []
    for clip in sorted(case.glob(pattern)):
        frames += [f.to_ndarray() for f in decoded_frames(clip)]
    return frames


def test_plan_reencodes_only_the_groups_that_show_a_redacted_frame(case: Path) -> None:
    plan = plan_join([probe(p) for p in sorted(case.glob("clip*.mp4"))])
    smart = plan_smart(plan, SegmentSet.of(SPANS))
    starts = [u.first_frame for u in smart.units]
    assert starts == list(range(0, 200, GOP))
    dirty_starts = sorted(smart.units[i].first_frame for i in smart.dirty)
    assert dirty_starts == [0, 25, 75, 100, 125, 150, 175]
    assert smart.delay_ticks > 0            # the source has B-frames


def assert_black_spans(frames: list[av.VideoFrame], spans: SegmentSet, total: int,
                       sources: list[np.ndarray] | None = None,
                       copied: Callable[[int], bool] = lambda i: False) -> None:
    """``total`` frames: those in ``spans`` black, every other one shows its own index (barcode), and those
    ``copied`` says are bit-identical to ``sources`` (copied, not re-encoded)."""
    assert len(frames) == total
    for index, frame in enumerate(frames):
        if spans.contains(index):
            assert luma_max(frame) <= 20, index
        else:
            assert read_barcode(frame) == index
        if copied(index):
            assert sources is not None and np.array_equal(frame.to_ndarray(), sources[index]), \
                f"copied frame {index} changed"


def assert_black_spans_and_copied_group(frames: list[av.VideoFrame], sources: list[np.ndarray]) -> None:
    """200 frames, SPANS black, and the one clean group [50, 75) copied bit-identical."""
    assert_black_spans(frames, SegmentSet.of(SPANS), 200, sources, lambda i: 50 <= i < 75)


def test_black_is_frame_exact_and_copied_groups_are_bit_identical(tmp_path: Path, case: Path) -> None:
    output, report = render(tmp_path, case, Redaction.BLACK)
    assert report["output"]["method"] == "smart-render"
    assert all(c["passed"] for c in report["checks"])
    assert_black_spans_and_copied_group(decoded_frames(output), source_frames(case))


def test_no_hidden_samples_and_ffmpeg_decodes_cleanly(tmp_path: Path, case: Path) -> None:
    output, _ = render(tmp_path, case, Redaction.BLACK)
    with av.open(str(output), options={"ignore_editlist": "1"}) as container:
        stored = sum(1 for p in container.demux(video=0) if p.size)
    assert stored == 200
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-xerror", "-err_detect", "explode",
                           "-i", str(output), "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert float(stream.duration * stream.time_base) == pytest.approx(8.0, abs=0.041)
        packets = [p for p in container.demux(stream) if p.size]
    dts = [p.dts for p in packets]
    assert all(b > a for a, b in itertools.pairwise(dts)), "decoding timestamps must rise strictly"
    assert all(p.dts <= p.pts for p in packets)


def test_cut_keeps_the_exact_frame_count(tmp_path: Path, case: Path) -> None:
    output, report = render(tmp_path, case, Redaction.CUT)
    redacted = SegmentSet.of(SPANS)
    codes = [read_barcode(f) for f in decoded_frames(output)]
    assert codes == [i for i in range(200) if not redacted.contains(i)]
    assert report["output"]["frames"] == 200 - redacted.frame_count


def test_blur_is_frame_exact(tmp_path: Path, case: Path) -> None:
    output, report = render(tmp_path, case, Redaction.BLUR)
    assert report["output"]["method"] == "smart-render"
    redacted = SegmentSet.of(SPANS)
    for index, frame in enumerate(decoded_frames(output)):
        if not redacted.contains(index):
            assert read_barcode(frame) == index


@pytest.mark.parametrize("container", ["mp4", "mpegts"])
def test_hevc_is_spliced_not_reencoded(tmp_path: Path, container: str) -> None:
    """HEVC in MP4 (hvcC) and in MPEG-TS (Annex B, in-band VPS/SPS/PPS, no hvcC: one is built from the in-band
    parameter sets and copied pictures are converted to length-prefixed NAL units): re-encoded groups spliced in,
    copied groups bit-exact, the whole output decodable with errors fatal."""
    folder = tmp_path / "case"
    folder.mkdir()
    suffix = ".ts" if container == "mpegts" else ".mp4"
    for name, frames in (("clip1", range(0, 60)), ("clip2", range(60, 120))):
        barcode_clip(folder / f"{name}{suffix}", frames, codec="libx265", gop=GOP, container_format=container,
                     options={"x265-params": "log-level=error:keyint=25:min-keyint=25:scenecut=0:open-gop=0"})
    spans = [(0, 3), (30, 34), (58, 62), (119, 120)]
    result, report = process_spans(folder, tmp_path, spans)
    assert report["output"]["method"] == "smart-render", report["output"]["notes"]
    assert report["output"]["codec"] == "hevc"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert any(c["name"] == "copied_packets" for c in report["checks"])
    # Black groups repeat one black encoding, but x265's in-band parameter sets reuse the source's ids: the
    # verifier decodes every repeat instead of proving it by identity.
    decodes = next(c["detail"] for c in report["checks"] if c["name"] == "decodes_cleanly")
    assert "repeated" not in decodes and result.output is not None
    # [85, 110) is a group copied right after a re-encoded one.
    assert_black_spans(decoded_frames(result.output), SegmentSet.of(spans), 120,
                       source_frames(folder, f"clip*{suffix}"), lambda i: 85 <= i < 110)
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-err_detect", "explode",
                           "-i", str(result.output), "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""


def test_sources_that_cannot_be_spliced_fall_back_to_a_full_reencode(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    # 10-bit H.264: only 8-bit 4:2:0 is spliced.
    from media import ffmpeg

    plain = barcode_clip(tmp_path / "plain.mp4", range(60))
    ffmpeg("-i", plain, "-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-g", "25", "-crf", "16", folder / "clip.mp4")
    result, report = process_spans(folder, tmp_path, [(10, 20)])
    assert report["output"]["method"] == "re-encode"
    assert any("re-encoded the whole case" in note and "pixel format" in note
               for note in report["output"]["notes"]), report["output"]["notes"]
    assert [read_barcode(f) for i, f in enumerate(decoded_frames(result.output)) if not 10 <= i < 20] == \
        [i for i in range(60) if not 10 <= i < 20]


def test_mpegts_is_spliced_not_reencoded(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    # MPEG-TS carries H.264 as Annex B, with in-band SPS/PPS and access unit delimiters; B-frames too.
    for name, frames in (("clip1.ts", range(0, 100)), ("clip2.ts", range(100, 200))):
        barcode_clip(folder / name, frames, gop=GOP, container_format="mpegts",
                     options={"x264-params": "scenecut=0:aud=1"})
    result, report = process_spans(folder, tmp_path, SPANS)
    assert report["output"]["method"] == "smart-render", report["output"]["notes"]
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert any(c["name"] == "copied_packets" for c in report["checks"])
    assert_black_spans_and_copied_group(decoded_frames(result.output), source_frames(folder, "clip*.ts"))
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-err_detect", "explode",
                           "-i", str(result.output), "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""


def test_splices_verification_decodes_only_what_changed_and_still_catches_damage(
        tmp_path: Path, case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import endoshare.pipeline as pipeline
    from endoshare.errors import VerificationError

    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": 60, "end_frame": 64}]}))
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none",
                             segments_file=segments, verify="splices")
    report = json.loads(process_case(CaseRequest(case), options).report.read_text())
    decode = next(c for c in report["checks"] if c["name"] == "decodes_cleanly")
    assert decode["passed"] and "spliced or sampled ranges" in decode["detail"]
    decoded = int(decode["detail"].split(" frames decoded")[0])
    # The changed group [50, 75) (its unchanged start is copied, so the group before it is not at a splice),
    # the group after it [75, 100), which is also the group before the clip join at 100, and the first
    # picture after the join.
    assert decoded == 51

    real_render = pipeline.render

    def damaged(plan, segs, opts, out_path, progress, cancel, **kwargs):  # type: ignore[no-untyped-def]
        result = real_render(plan, segs, opts, out_path, progress, cancel, **kwargs)
        data = bytearray(out_path.read_bytes())
        with av.open(str(out_path)) as container:         # damage a picture of the re-encoded group
            packet = [p for p in container.demux(video=0) if p.size][62]
            offset = packet.pos + packet.size // 2
        data[offset:offset + 64] = bytes(64)
        out_path.write_bytes(bytes(data))
        return result

    monkeypatch.setattr(pipeline, "render", damaged)
    with pytest.raises(VerificationError) as caught:
        process_case(CaseRequest(case), ProcessOptions(**{**options.__dict__, "new_pseudonym": True}))
    assert "decodes_cleanly" in caught.value.failed_checks


def repeated_timestamps_mp4(source: Path, target: Path, every: bool = False) -> None:
    """``source``'s packets in an MP4 where two pictures share a presentation time (as a TS remuxed
    without care gives); with ``every``, each picture is given the latest time seen so far in decode
    order (timestamps that repeat but never go back, whatever the pictures' display order)."""
    from endoshare.media.scrub import open_output

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        out = open_output(target)
        out_stream = out.add_stream_from_template(stream)
        out.start_encoding()
        latest = packets[0].pts
        for number, packet in enumerate(packets):
            if every:
                latest = max(latest, packet.pts)
                packet.pts = latest
            elif number in (30, 70):
                packet.pts = packets[number + 1].pts
            packet.stream = out_stream
            out.mux(packet)
        out.close()


@pytest.mark.parametrize("spans", [[], [(40, 45)]])
def test_repeated_timestamps_in_mp4_do_not_fail_a_case(tmp_path: Path, spans: list[tuple[int, int]]) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    plain = barcode_clip(tmp_path / "plain.mp4", range(100), gop=GOP, options={"x264-params": "scenecut=0:bframes=0"})
    repeated_timestamps_mp4(plain, folder / "clip.mp4")
    result, report = process_spans(folder, tmp_path, spans)
    assert report["output"]["method"] == ("smart-render" if spans else "stream-copy")
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    codes = [read_barcode(f) for f in decoded_frames(result.output)]
    assert [c for i, c in enumerate(codes) if not any(a <= i < b for a, b in spans)] == \
        [i for i in range(100) if not any(a <= i < b for a, b in spans)]


@pytest.mark.parametrize("redaction", [Redaction.BLACK, Redaction.CUT])
def test_groups_wholly_redacted_are_replaced_without_decoding(tmp_path: Path, case: Path, redaction: Redaction,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import endoshare.render.smart as smart

    decoded: list[int] = []
    real = smart._decode_group

    def counting(unit, packets, *args):  # type: ignore[no-untyped-def]
        decoded.append(len(packets))
        return real(unit, packets, *args)

    monkeypatch.setattr(smart, "_decode_group", counting)
    spans = [(25, 75), (80, 81)]          # two whole groups, and one frame of the next
    result, report = process_spans(case, tmp_path, spans, redaction=redaction)
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert decoded == [25]                # only the partly redacted group was decoded
    frames = decoded_frames(result.output)
    if redaction is Redaction.BLACK:
        assert all(luma_max(frames[i]) <= 20 for i in [*range(25, 75), 80])
        assert [read_barcode(f) for i, f in enumerate(frames) if not (25 <= i < 75 or i == 80)] == \
            [i for i in range(200) if not (25 <= i < 75 or i == 80)]
    else:
        assert [read_barcode(f) for f in frames] == [i for i in range(200) if not (25 <= i < 75 or i == 80)]


def test_repeated_timestamps_with_reordered_pictures_are_re_encoded_not_guessed(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    # B-frames: frame order is not display order, so the repeated times cannot be rebuilt from it.
    plain = barcode_clip(tmp_path / "plain.mp4", range(100), gop=GOP, options={"x264-params": "scenecut=0"})
    # The times never go back, yet frame order is not display order.
    repeated_timestamps_mp4(plain, folder / "clip.mp4", every=True)
    result, report = process_spans(folder, tmp_path, [(40, 45)])
    assert report["output"]["method"] == "re-encode"
    assert any("reordered pictures" in note for note in report["output"]["notes"])
    assert all(c["passed"] for c in report["checks"]), report["checks"]


def test_copyable_prefix_is_read_from_the_timestamps() -> None:
    from endoshare.render.smart import _copyable_prefix

    # Decode order I P B B P B B P, shown 0 3 1 2 6 4 5 7 (B-frames).
    pts = np.array([0, 3, 1, 2, 6, 4, 5, 7]) * 512
    assert _copyable_prefix(pts, 5) == 4      # frames 0-4 unchanged: the P shown at 6 must not be copied
    assert _copyable_prefix(pts, 4) == 4
    assert _copyable_prefix(pts, 3) == 0      # only the IDR alone is closed: too short to copy
    assert _copyable_prefix(pts, 0) == 0
    assert _copyable_prefix(np.arange(10), 7) == 7        # no reordering: every unchanged frame
    # A stream that reorders without saying so: the timestamps decide, not the SPS.
    assert _copyable_prefix(np.array([0, 2, 1, 3]), 2) == 0


def test_partly_redacted_groups_copy_their_unchanged_start(tmp_path: Path, case: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """In-body then out of body: the in-body start is copied and the black rest is encoded without decoding
    anything; in-body, black, in-body: the start copied, the rest re-encoded from a new IDR picture;
    out of body then in-body: nothing copied, the in-body rest re-encoded from its own IDR picture."""
    import endoshare.render.smart as smart

    spans = [(60, 75), (110, 118), (125, 130)]
    plan = plan_join([probe(p) for p in sorted(case.glob("clip*.mp4"))])
    smart_plan = plan_smart(plan, SegmentSet.of(spans))
    by_start = {u.first_frame: n for n, u in enumerate(smart_plan.units)}
    assert smart_plan.prefix(by_start[50]) >= 2 and smart_plan.prefix(by_start[100]) >= 2
    assert smart_plan.prefix(by_start[125]) == 0
    assert smart_plan.reencoded_frames < 3 * GOP
    decoded: list[int] = []
    real = smart._decode_group

    def counting(unit, packets, *args):  # type: ignore[no-untyped-def]
        decoded.append(unit.first_frame)
        return real(unit, packets, *args)

    monkeypatch.setattr(smart, "_decode_group", counting)
    result, report = process_spans(case, tmp_path, spans)
    assert report["output"]["method"] == "smart-render"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert decoded == [100, 125]              # the group that ends out of body is not decoded
    prefixes = [range(start, start + smart_plan.prefix(by_start[start])) for start in (50, 100)]
    assert_black_spans(decoded_frames(result.output), SegmentSet.of(spans), 200, source_frames(case),
                       lambda i: any(i in prefix for prefix in prefixes))
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-xerror", "-err_detect", "explode",
                           "-i", str(result.output), "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    with av.open(str(result.output)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    dts = [p.dts for p in packets]
    assert all(b > a for a, b in itertools.pairwise(dts)) and all(p.dts <= p.pts for p in packets)


def test_adjacent_one_picture_groups_differ_in_idr_pic_id(tmp_path: Path) -> None:
    """Every picture of an all-intra source is its own group; two adjacent redacted frames become two
    adjacent one-picture re-encoded groups, between copied IDR pictures.  H.264 (7.4.3) requires any two
    IDR pictures in a row to differ in idr_pic_id, which x264 starts at 0 in every new encoder."""
    from endoshare.media.nal import AvcConfig, h264_idr_pic_id, h264_slice_syntaxes, split_nal_units

    folder = tmp_path / "case"
    folder.mkdir()
    barcode_clip(folder / "clip.mp4", range(30), gop=1, options={"x264-params": "scenecut=0"})
    spans = [(5, 7), (10, 11), (20, 21)]
    result, report = process_spans(folder, tmp_path, spans)
    assert report["output"]["method"] == "smart-render"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    with av.open(str(result.output)) as container:
        stream = container.streams.video[0]
        config = AvcConfig.parse(bytes(stream.codec_context.extradata))
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    syntax = h264_slice_syntaxes(config.sps, config.pps)
    ids = [next(h264_idr_pic_id(u, syntax) for u in split_nal_units(p, config.length_size) if u[0] & 0x1F == 5)
           for p in packets]
    assert len(ids) == 30 and None not in ids
    assert all(a != b for a, b in itertools.pairwise(ids)), ids
    frames = decoded_frames(result.output)
    redacted = SegmentSet.of(spans)
    assert [luma_max(f) <= 20 for f in frames] == [redacted.contains(i) for i in range(30)]


@pytest.mark.parametrize("bframes", [0, 3])
def test_missing_timestamps_are_rebuilt_from_frame_order_only_without_reordering(tmp_path: Path,
                                                                                 bframes: int) -> None:
    """A raw Annex B H.264 stream carries no timestamps at all (nor do PES packets without a PTS): without
    reordered pictures they are rebuilt from frame order and the stream is spliced; with B-frames the
    planner refuses (the caller re-encodes) instead of guessing."""
    from endoshare.render.common import EncodeSettings
    from endoshare.render.smart import NotSpliceable, render_smart
    from endoshare.verify import verify_output
    from media import ffmpeg

    plain = barcode_clip(tmp_path / "plain.mp4", range(100), gop=GOP,
                         options={"x264-params": f"scenecut=0:bframes={bframes}"})
    raw = tmp_path / "clip.h264"
    ffmpeg("-i", plain, "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", raw)
    with av.open(str(raw)) as container:
        assert all(p.pts is None for p in container.demux(video=0) if p.size)
    plan = plan_join([probe(raw)])
    spans = SegmentSet.of([(40, 45)])
    if bframes:
        with pytest.raises(NotSpliceable, match="missing in a stream with reordered pictures"):
            plan_smart(plan, spans)
        return
    out = tmp_path / "out.mp4"
    result = render_smart(plan, spans, Redaction.BLACK, EncodeSettings(), out)
    assert result.method == "smart-render"
    checks = {c.name: (c.passed, c.detail) for c in verify_output(out, result, sources=(raw,))}
    assert all(passed for passed, _ in checks.values()), checks
    assert_black_spans(decoded_frames(out), spans, 100)


def test_black_groups_reuse_one_black_encoding(tmp_path: Path, case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Black groups of 25, 20 and 10 frames: one black encoding of 25 pictures serves all three."""
    import endoshare.render.smart as smart

    black_lengths: list[int] = []
    real = smart._Splicer.encode

    def recording(self, frames, idr_pic_id=0):  # type: ignore[no-untyped-def]
        if len({id(f) for f in frames}) == 1 and len(frames) > 1:
            black_lengths.append(len(frames))
        return real(self, frames, idr_pic_id)

    monkeypatch.setattr(smart._Splicer, "encode", recording)
    spans = [(0, 25), (30, 50), (75, 85)]
    result, report = process_spans(case, tmp_path, spans)
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert black_lengths == [25]
    assert_black_spans(decoded_frames(result.output), SegmentSet.of(spans), 200)


@pytest.mark.parametrize("span", [(26, 27), (28, 30), (31, 50), (37, 38), (44, 49), (48, 49), (49, 50), (25, 26)])
def test_a_span_anywhere_in_a_group_with_b_frames_is_frame_exact_and_verified(tmp_path: Path, case: Path,
                                                                              span: tuple[int, int]) -> None:
    """Spans starting at every kind of place in a group with B-frames (pyramid): whatever prefix the
    timestamps allow is copied bit for bit, every other frame shows its own index or is black, and
    every check passes (packet identity of the prefix included)."""
    from endoshare.render.common import EncodeSettings
    from endoshare.render.smart import render_smart
    from endoshare.verify import verify_output

    plan = plan_join([probe(p) for p in sorted(case.glob("clip*.mp4"))])
    spans = SegmentSet.of([span])
    smart_plan = plan_smart(plan, spans)
    prefix = smart_plan.prefix(next(n for n, u in enumerate(smart_plan.units) if u.first_frame == 25))
    assert 25 + prefix <= span[0]
    if span[0] >= 28:
        assert prefix >= 2                 # x264's first B-frame group closes after 3 pictures here
    out = tmp_path / "out.mp4"
    result = render_smart(plan, spans, Redaction.BLACK, EncodeSettings(), out)
    clips = tuple(sorted(case.glob("clip*.mp4")))
    checks = {c.name: (c.passed, c.detail) for c in verify_output(out, result, sources=clips)}
    assert all(passed for passed, _ in checks.values()), checks
    assert_black_spans(decoded_frames(out), spans, 200, source_frames(case),
                       lambda i: 25 <= i < 25 + prefix or 50 <= i < 75)


def test_reencoded_in_body_frames_keep_the_source_quality(tmp_path: Path) -> None:
    """Frames re-encoded around a redaction sit between copied ones: against the decoded source they keep their
    PSNR (here, with x264 veryfast CRF 16: mean 40.4 dB, lowest 38.9 dB; ultrafast CRF 17: 41.8 and 37.4 dB;
    CRF 23 would lose about 5 dB)."""
    folder = tmp_path / "case"
    folder.mkdir()
    rng = np.random.default_rng(7)
    # A textured picture moving by a pixel a frame, with noise: what an encoder must spend bits on.
    base = rng.integers(0, 256, (200, 400), dtype=np.uint8)
    base = (base.astype(np.float32) + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3
    frames = [np.clip(base[n % 20:n % 20 + 180, n:n + 320] + rng.normal(0, 4, (180, 320)), 0, 255).astype(np.uint8)
              for n in range(50)]
    write_clip(folder / "clip.mp4", (np.repeat(f[:, :, None], 3, axis=2) for f in frames), gop=25,
               options={"crf": "18", "x264-params": "scenecut=0"})
    result, report = process_spans(folder, tmp_path, [(30, 33)])
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    out = [f.to_ndarray()[:180].astype(np.float64) for f in decoded_frames(result.output)]
    source = [f.to_ndarray()[:180].astype(np.float64) for f in decoded_frames(folder / "clip.mp4")]
    # Frames 33-49 are re-encoded from their own IDR picture (25-29 may be a copied prefix, 30-32 are black).
    psnr = [10 * np.log10(255 ** 2 / np.mean((out[n] - source[n]) ** 2)) for n in range(33, 50)]
    assert np.mean(psnr) > 39.5 and min(psnr) > 36, psnr


def test_a_group_is_decoded_only_as_far_as_its_last_needed_picture(tmp_path: Path, case: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Group [25, 50) shows in-body frames up to 39 and black from 40: its source pictures after 39 are not
    needed, so decoding stops once frame 39 is out (the black run is made without them)."""
    import endoshare.render.smart as smart

    decoded: list[tuple[int, int]] = []
    real = smart._decode_group

    def recording(unit, packets, plan, clip, wanted=None):  # type: ignore[no-untyped-def]
        pictures = real(unit, packets, plan, clip, wanted)
        decoded.append((unit.first_frame, len(pictures)))
        return pictures

    monkeypatch.setattr(smart, "_decode_group", recording)
    spans = [(40, 50), (60, 62)]
    result, report = process_spans(case, tmp_path, spans)
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    # [50, 75): in-body frames after the span need the whole group.
    assert decoded == [(25, 15), (50, 25)]
    assert_black_spans(decoded_frames(result.output), SegmentSet.of(spans), 200)


def _x264_uses_cavlc(output: Path) -> bool:
    """Whether a PPS of the output's avcC codes with CAVLC (x264 ``ultrafast``; the source and ``veryfast``
    use CABAC): entropy_coding_mode_flag follows the PPS's two exp-Golomb ids."""
    with av.open(str(output)) as container:
        config = AvcConfig.parse(bytes(container.streams.video[0].codec_context.extradata or b""))
    flags = []
    for pps in config.pps:
        _, bit = read_ue(pps[1:], 0)
        _, bit = read_ue(pps[1:], bit)
        flags.append(pps[1 + bit // 8] >> (7 - bit % 8) & 1)
    return 0 in flags


@pytest.mark.parametrize(("spans", "cavlc"), [([(40, 50)], True),
                                              ([(n * 25 + 10, n * 25 + 12) for n in range(8)], False)])
def test_splice_preset_follows_the_share_of_groups_reencoded(tmp_path: Path, case: Path,
                                                            spans: list[tuple[int, int]], cavlc: bool) -> None:
    """A few re-encoded groups among copied ones are encoded fast (ultrafast, CAVLC); when every group is
    re-encoded (text masked throughout a case) size comes first (veryfast, CABAC)."""
    result, report = process_spans(case, tmp_path, spans)
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert report["output"]["method"] == "smart-render"
    assert _x264_uses_cavlc(result.output) is cavlc


@pytest.fixture(scope="module")
def noisy_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Detailed pictures with film grain, as a real scope gives, in groups with B-frames (pyramid): coding
    a black frame from one of them leaves residue above black, as clean generated pictures do not."""
    folder = tmp_path_factory.mktemp("noisy") / "case"
    folder.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25,noise=alls=12:allf=t,format=yuv420p", "-t", "4",
           "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "50", "-keyint_min", "50",
           "-sc_threshold", "0", folder / "clip.mp4")
    return folder


@pytest.mark.parametrize("start", range(51, 59))
def test_black_after_a_reencoded_picture_of_the_surgery_is_black(tmp_path: Path, noisy_case: Path,
                                                                   start: int) -> None:
    """A span starting anywhere in a mini-GOP (B-frames): the in-body pictures re-encoded before it are
    never coded together with its black frames (a black frame coded from a noisy picture kept pixels
    above black, and the verifier then refused the output)."""
    result, report = process_spans(noisy_case, tmp_path, [(start, start + 10)], mask_overlays=False)
    assert report["output"]["method"] == "smart-render"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    frames = decoded_frames(result.output)
    assert [i for i, f in enumerate(frames) if luma_max(f) <= 20] == list(range(start, start + 10))
