"""Verification whose cost follows what changed: copied groups are proven by packet identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare.media.join import plan_join
from endoshare.media.probe import iter_video_packets, probe
from endoshare.media.scrub import open_output
from endoshare.render.common import EncodeSettings, Redaction, RenderResult
from endoshare.render.copy import render_copy
from endoshare.render.smart import render_smart
from endoshare.timeline import SegmentSet
from endoshare.verify import verify_output
from media import barcode_clip

Edit = Callable[[int, bytes, int], tuple[bytes, int]]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RenderResult]:
    folder = tmp_path_factory.mktemp("changes")
    clip = barcode_clip(folder / "clip.mp4", range(200), gop=25, options={"x264-params": "scenecut=0"})
    plan = plan_join([probe(clip)])
    out = folder / "out.mp4"
    result = render_smart(plan, SegmentSet.of([(33, 40)]), Redaction.BLACK, EncodeSettings(), out)
    return out, result


def checks(path: Path, result: RenderResult, mode: str = "changes") -> dict[str, tuple[bool, str]]:
    return {c.name: (c.passed, c.detail) for c in verify_output(path, result, mode=mode)}


def rewrite(source: Path, target: Path, edit: Edit) -> None:
    """A copy of ``source``'s video packets with ``edit(number, data, pts)`` applied to each."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        out = open_output(target)
        out_stream = out.add_stream_from_template(stream)
        out.start_encoding()
        for number, packet in enumerate(iter_video_packets(container, stream)):
            data, pts = edit(number, bytes(packet), packet.pts)
            copy = av.Packet(data)
            copy.pts, copy.dts, copy.is_keyframe = pts, packet.dts, packet.is_keyframe
            copy.time_base, copy.stream = packet.time_base, out_stream
            out.mux(copy)
        out.close()


def test_clean_splice_is_proven_by_packet_identity_and_partial_decode(rendered: tuple[Path, RenderResult]) -> None:
    out, result = rendered
    found = checks(out, result)
    assert all(passed for passed, _ in found.values()), found
    # The group [25, 50) copies its unchanged start (the closed decode-order prefix before frame 33: here the
    # first 5 packets, as x264 placed its B-frames) and re-encodes the rest from a new IDR picture.
    assert "180 of 200 packets equal their scrubbed source packets" in found["copied_packets"][1]
    # The changed group and the first picture (IDR) of the group after it; the group before a copied prefix
    # is not at a splice.
    assert found["decodes_cleanly"][1].startswith("26 frames decoded")


def test_full_decoding_stays_an_option(rendered: tuple[Path, RenderResult]) -> None:
    out, result = rendered
    found = checks(out, result, "full")
    assert "copied_packets" not in found
    assert found["decodes_cleanly"] == (True, "200 frames decoded")


def test_a_corrupted_copied_packet_fails(rendered: tuple[Path, RenderResult], tmp_path: Path) -> None:
    out, result = rendered
    bad = tmp_path / "bad.mp4"

    def flip(number: int, data: bytes, pts: int) -> tuple[bytes, int]:
        # A byte of picture data in a copied group far from any splice (frames 150-174).
        return (data[:-1] + bytes([data[-1] ^ 0x10]), pts) if number == 160 else (data, pts)

    rewrite(out, bad, flip)
    passed, detail = checks(bad, result)["copied_packets"]
    assert not passed and "output packet 160" in detail and "slice differs" in detail


def test_a_copied_packet_at_the_wrong_time_fails(rendered: tuple[Path, RenderResult], tmp_path: Path) -> None:
    out, result = rendered
    bad = tmp_path / "late.mp4"
    with av.open(str(out)) as container:
        packets = [(p.pts, p.dts) for p in iter_video_packets(container, container.streams.video[0])]
    # Two pictures of one copied group trade places (every frame time is still used once), chosen so
    # that the muxer accepts it (no picture shown before it is decoded).
    a, b = next((a, b) for a in range(152, 172) for b in range(a + 1, 172)
                if packets[b][0] >= packets[a][1] and packets[a][0] >= packets[b][1])
    times = {a: packets[b][0], b: packets[a][0]}

    def swap(number: int, data: bytes, time: int) -> tuple[bytes, int]:
        return data, times.get(number, time)

    rewrite(out, bad, swap)
    passed, detail = checks(bad, result)["copied_packets"]
    assert not passed and "wrong time" in detail


def test_a_packet_neither_copied_nor_decoded_fails(rendered: tuple[Path, RenderResult]) -> None:
    out, result = rendered
    assert result.copied_runs
    # The renderer "forgets" its last copied run: those packets are proven by nothing.
    partial = replace(result, copied_runs=result.copied_runs[:-1])
    passed, detail = checks(out, partial)["copied_packets"]
    assert not passed and "neither proven copied nor decoded" in detail


def test_stream_copy_join_is_proven_too(tmp_path: Path) -> None:
    clips = [barcode_clip(tmp_path / f"c{n}.mp4", range(n * 100, n * 100 + 100), gop=25) for n in range(2)]
    out = tmp_path / "joined.mp4"
    result = render_copy(plan_join([probe(c) for c in clips]), out)
    found = checks(out, result)
    assert all(passed for passed, _ in found.values()), found
    assert found["copied_packets"][1].startswith("200 of 200 packets")


def test_copied_runs_must_come_from_the_case_clips(rendered: tuple[Path, RenderResult]) -> None:
    out, result = rendered
    assert result.copied_runs
    # A renderer that says it copied the output from itself proves nothing.
    selfish = replace(result, copied_runs=tuple(replace(r, source=out) for r in result.copied_runs))
    passed, detail = checks(out, selfish)["copied_packets"]
    assert not passed and "not one of the case's clips" in detail
    found = {c.name: c for c in verify_output(out, result, sources=(out.with_name("other.mp4"),))}
    assert not found["copied_packets"].passed


def test_frame_order_timing_is_refused_for_a_source_with_reordered_pictures(
        rendered: tuple[Path, RenderResult]) -> None:
    out, result = rendered
    assert result.copied_runs
    # The source has B-frames: "shown in decode order" would put its pictures out of order.
    guessed = replace(result, copied_runs=tuple(replace(r, frame_order=True) for r in result.copied_runs))
    passed, detail = checks(out, guessed)["copied_packets"]
    assert not passed and "reordered" in detail


@pytest.fixture(scope="module")
def blacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RenderResult]:
    """Black groups of several lengths: two whole groups, the start of one (before in-body frames) and ten
    frames inside another (after a copied prefix: x264 put no B-frame before frame 179)."""
    folder = tmp_path_factory.mktemp("repeats")
    clip = barcode_clip(folder / "clip.mp4", range(250), gop=25, options={"x264-params": "scenecut=0"})
    out = folder / "out.mp4"
    result = render_smart(plan_join([probe(clip)]), SegmentSet.of([(50, 120), (179, 190)]), Redaction.BLACK,
                          EncodeSettings(), out)
    return out, result


def test_black_groups_are_decoded_once(blacked: tuple[Path, RenderResult]) -> None:
    out, result = blacked
    # Every black group but the longest is a repeat of it: the first pictures of the one black encoding.
    assert [(r.first_output, r.count, r.reference) for r in result.repeated_runs] == [(75, 25, 50), (100, 20, 50),
                                                                                   (179, 11, 50)]
    with av.open(str(out)) as container:
        packets = [bytes(p) for p in iter_video_packets(container, container.streams.video[0])]
    for run in result.repeated_runs:
        repeat, reference = run.first_output, run.reference
        assert packets[repeat:repeat + run.count] == packets[reference:reference + run.count]
    found = checks(out, result)
    assert all(passed for passed, _ in found.values()), found
    assert "56 repeat a decoded re-encoded group byte for byte" in found["copied_packets"][1]
    assert "56 frames of 3 repeated groups proven equal to decoded ones" in found["decodes_cleanly"][1]
    assert found["redaction"] == (True, "81 black frames have luma <= 20; 0 blurred frames keep <= 25% of their "
                                        "detail; 0 frames cut")
    # Decoded: the group before the black ones, the reference, the in-body end of group [100, 125) and the IDR
    # picture after it, group [175, 200) whole but for the repeat, and the IDR picture after it.
    decoded = int(found["decodes_cleanly"][1].split()[0])
    assert decoded == 25 + 25 + 6 + 14 + 1
    # Full and "splices" verifications decode every black frame themselves.
    assert checks(out, result, "full")["redaction"][0]
    assert "repeated" not in checks(out, result, "splices")["decodes_cleanly"][1]


def test_a_repeated_black_group_whose_bytes_differ_fails(blacked: tuple[Path, RenderResult], tmp_path: Path) -> None:
    out, result = blacked
    bad = tmp_path / "bad.mp4"

    def flip(number: int, data: bytes, pts: int) -> tuple[bytes, int]:
        # The last picture of the repeat [75, 100): it is not decoded, only compared with its reference.
        return (data[:-1] + bytes([data[-1] ^ 0x01]), pts) if number == 99 else (data, pts)

    rewrite(out, bad, flip)
    passed, detail = checks(bad, result)["copied_packets"]
    assert not passed and "1 of 3 repeated groups are not proven: packets 75+25 differ" in detail
    # The claim is refused whatever the file: a renderer that names the wrong reference fails too.
    wrong = replace(result, repeated_runs=(replace(result.repeated_runs[0], reference=0),))
    passed, detail = checks(out, wrong)["copied_packets"]
    assert not passed and "not proven" in detail


def test_a_repeated_black_group_shown_out_of_order_fails(blacked: tuple[Path, RenderResult], tmp_path: Path) -> None:
    out, result = blacked
    bad = tmp_path / "swapped.mp4"
    with av.open(str(out)) as container:
        packets = [(p.pts, p.dts) for p in iter_video_packets(container, container.streams.video[0])]
    # Two black pictures of the repeat [75, 100) trade places: every frame is still black and every time used once.
    a, b = next((a, b) for a in range(76, 100) for b in range(a + 1, 100)
                if packets[b][0] >= packets[a][1] and packets[a][0] >= packets[b][1])
    times = {a: packets[b][0], b: packets[a][0]}
    rewrite(out, bad, lambda number, data, time: (data, times.get(number, time)))
    passed, detail = checks(bad, result)["copied_packets"]
    assert not passed and "not shown in decode order" in detail


def test_identifying_strings_are_found_anywhere_in_the_file(tmp_path: Path) -> None:
    from endoshare.verify import _check_identifying_strings

    rng = np.random.default_rng(3)
    data = bytearray(rng.integers(0, 256, 9 << 20, dtype=np.uint8).tobytes())
    seam = 8 << 20                                   # where a chunked reader would cut the file
    data[seam - 5:seam + 9] = b"PatientHuber42"
    data[-12:] = b"..Lavf61.1.."
    path = tmp_path / "leaky.bin"
    path.write_bytes(bytes(data))
    found = _check_identifying_strings(path, ("PatientHuber42", "other-name"))
    assert not found.passed
    assert found.detail.startswith("1 case identifier(s) and the encoder signature(s) ['Lavf61.']")
    clean = tmp_path / "clean.bin"
    clean.write_bytes(bytes(data[:seam - 5]))
    assert _check_identifying_strings(clean, ("PatientHuber42",)).passed
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert _check_identifying_strings(empty, ("PatientHuber42",)).passed



def test_a_cancel_stops_the_verification(blacked: tuple[Path, RenderResult]) -> None:
    from endoshare.errors import CancelledError

    out, result = blacked
    asked: list[int] = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 3                # after some scanning

    with pytest.raises(CancelledError):
        verify_output(out, result, cancel=cancel)
