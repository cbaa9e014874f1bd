"""Bad input gets a clear, typed error naming the file, and the rest of the batch goes on."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import endoshare.pipeline as pipeline
from conftest import options
from endoshare import errors
from endoshare.pipeline import CaseRequest, process_case, process_cases
from media import barcode_clip, ffmpeg


def case_with(tmp_path: Path, name: str, files: dict[str, bytes | None]) -> Path:
    """A case folder; a value of None means a real 20-frame clip."""
    folder = tmp_path / name
    folder.mkdir()
    for file_name, content in files.items():
        if content is None:
            barcode_clip(folder / file_name, range(20))
        else:
            (folder / file_name).write_bytes(content)
    return folder


def truncated_mp4(tmp_path: Path) -> bytes:
    """An MP4 cut short as by a power cut: the moov index (written last) is missing."""
    whole = barcode_clip(tmp_path / "whole.mp4", range(40)).read_bytes()
    assert whole.rfind(b"moov") > len(whole) // 2      # the writer put the index at the end
    return whole[: len(whole) // 2]


def index_cut_mp4(tmp_path: Path) -> bytes:
    """An MP4 whose moov index (written last) lost its last bytes: it lists no frame."""
    whole = barcode_clip(tmp_path / "whole.mp4", range(40)).read_bytes()
    return whole[:-100]


def jpeg_picture() -> bytes:
    """A JPEG photo (what a user may save with a video name by mistake)."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = 64, 48, "yuvj420p", Fraction(1, 25)
    picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in [*encoder.encode(picture.reformat(format="yuvj420p")), *encoder.encode(None)])


def audio_only(tmp_path: Path) -> bytes:
    path = tmp_path / "audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-c:a", "aac", path)
    return path.read_bytes()


@pytest.mark.parametrize("kind, error_type, words", [
    ("empty_folder", errors.NoVideoFilesError, "holds no video file"),
    ("zero_bytes", errors.EmptyFileError, "is empty"),
    ("not_video", errors.UnreadableMediaError, "cannot be opened"),
    ("truncated", errors.UnreadableMediaError, "no 'moov' index"),
    ("index_cut", errors.UnreadableMediaError, "truncated"),
    ("still_image", errors.NoVideoStreamError, "is a still image"),
    ("audio_only", errors.NoVideoStreamError, "no video stream"),
    ("missing_folder", errors.MissingInputError, "does not exist"),
])
def test_each_bad_input_has_a_typed_error_naming_the_file(tmp_path: Path, kind: str,
                                                         error_type: type[Exception], words: str) -> None:
    contents: dict[str, dict[str, bytes | None]] = {
        "empty_folder": {},
        "zero_bytes": {"VID1.mp4": b""},
        "not_video": {"VID1.mp4": b"This is a text file with a video extension.\n" * 50},
        "truncated": {"VID1.mp4": truncated_mp4(tmp_path)},
        "index_cut": {"VID1.mp4": None, "VID2.mp4": index_cut_mp4(tmp_path)},
        "still_image": {"VID1.mp4": None, "VID2.mp4": jpeg_picture()},
        "audio_only": {"VID1.mp4": audio_only(tmp_path)},
    }
    folder = tmp_path / "nowhere" if kind == "missing_folder" else case_with(tmp_path, kind, contents[kind])
    with pytest.raises(error_type) as caught:
        process_case(CaseRequest(folder), options(tmp_path))
    message = str(caught.value)
    assert words in message
    assert str(folder) in message
    assert not (tmp_path / "shared").exists() or not any((tmp_path / "shared").iterdir())


@pytest.mark.parametrize("keep", ["half", "all but the last bytes"])
def test_a_recording_cut_short_after_its_index_is_refused_by_name(tmp_path: Path, keep: str) -> None:
    """An MP4 written index first (faststart), then cut off: the index still lists every picture. Fast mode
    used to copy what was there and fail verification with a message naming no file."""
    whole = barcode_clip(tmp_path / "whole.mp4", range(40))
    ffmpeg("-i", whole, "-c", "copy", "-movflags", "+faststart", tmp_path / "faststart.mp4")
    data = (tmp_path / "faststart.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    folder = case_with(tmp_path, "case", {"VID1.mp4": None,
                                          "VID2.mp4": data[:len(data) // 2 if keep == "half" else -10]})
    with pytest.raises(errors.UnreadableMediaError) as caught:
        process_case(CaseRequest(folder), options(tmp_path))
    message = str(caught.value)
    assert str(folder / "VID2.mp4") in message and "truncated" in message and "copy it again" in message
    assert "index lists 40 pictures" in message


def test_a_case_folder_named_in_bytes_that_are_not_utf8_is_processed(tmp_path: Path) -> None:
    """The mapping file, reports, queue and audit log hold text: the case ID shows the name's stray byte as
    \\xff, and the queue keeps the folder's bytes exactly (it used to crash on them)."""
    from endoshare.identity import MappingStore
    from endoshare.jobs import process_one
    from endoshare.jobs.audit import AuditLog

    folder = case_with(tmp_path, os.fsdecode(b"PAT7793\xffcase"), {"clip1.mp4": None})
    job = process_one(folder, options(tmp_path))
    assert job.state == "done", job.error
    assert job.case_id == "PAT7793\\xffcase" and job.folder == folder.absolute()
    assert [r["folder"] for r in AuditLog(tmp_path / "archive").records()][-1] == str(folder.absolute())
    assert MappingStore(tmp_path / "archive").lookup("PAT7793\\xffcase") == job.pseudonym


def test_batch_goes_on_after_failures_and_hostile_names_work(tmp_path: Path) -> None:
    hostile = case_with(tmp_path, "-rf 'quoted' \"double\" Ünïcødé ✓", {
        "-leading dash.mp4": None, "with 'quote' and space.mp4": None, "naïve ✓ clip.MP4": None})
    requests = [CaseRequest(case_with(tmp_path, "empty", {})), CaseRequest(hostile),
                CaseRequest(case_with(tmp_path, "zero", {"a.mp4": b""}))]
    results = list(process_cases(requests, options(tmp_path)))
    assert [r.status for r in results] == ["failed", "ok", "failed"]
    assert results[0].error_type == "NoVideoFilesError"
    assert results[2].error_type == "EmptyFileError" and "a.mp4" in (results[2].error or "")
    report = json.loads(results[1].report.read_text())
    assert report["output"]["frames"] == 60


def test_segments_beyond_the_case_are_rejected(tmp_path: Path) -> None:
    folder = case_with(tmp_path, "case", {"a.mp4": None})
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": 10, "end_frame": 25}]}))
    with pytest.raises(errors.SegmentsFileError, match="has 20 frames"):
        process_case(CaseRequest(folder), options(tmp_path, segments_file=segments))


def test_disk_full_while_writing_is_a_clear_error_and_leaves_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = case_with(tmp_path, "case", {"a.mp4": None})

    def full_disk(plan, segments, opts, out_path, progress, cancel, **kwargs):  # type: ignore[no-untyped-def]
        out_path.write_bytes(b"\0" * 1000)              # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(out_path))

    monkeypatch.setattr(pipeline, "render", full_disk)
    with pytest.raises(errors.DiskFullError, match=r"output folder .*shared is full"):
        process_case(CaseRequest(folder), options(tmp_path))
    assert list((tmp_path / "shared").iterdir()) == []


@pytest.mark.parametrize("damage", ["corrupt_bytes", "planted_tag", "unredacted", "hidden_samples", "sei_user_data"])
def test_a_broken_output_fails_verification_and_is_not_published(tmp_path: Path, damage: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection after rendering: the verifier must catch each kind of damage."""
    folder = case_with(tmp_path, "case", {"a.mp4": None})
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": 5, "end_frame": 10}]}))
    real_render = pipeline.render

    def damaged(plan, segs, opts, out_path, progress, cancel, **kwargs):  # type: ignore[no-untyped-def]
        result = real_render(plan, segs, opts, out_path, progress, cancel, **kwargs)
        if damage == "corrupt_bytes":
            data = bytearray(out_path.read_bytes())
            start = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 3     # inside slice data
            data[start:start + 2000] = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes()
            out_path.write_bytes(bytes(data))
        elif damage == "planted_tag":
            tagged = out_path.with_suffix(".tagged.mp4")
            ffmpeg("-i", out_path, "-c", "copy", "-metadata", "title=leak", tagged)
            tagged.replace(out_path)
        elif damage == "hidden_samples":
            # A copy cut between keyframes (5 and 10): the frames before the cut stay, hidden by an edit list.
            cut = out_path.with_suffix(".cut.mp4")
            ffmpeg("-ss", "0.3", "-i", out_path, "-c", "copy", "-map_metadata", "-1", "-fflags", "+bitexact", cut)
            cut.replace(out_path)
        elif damage == "sei_user_data":
            planted = out_path.with_suffix(".sei.mp4")
            ffmpeg("-i", out_path, "-c", "copy", "-fflags", "+bitexact", "-bsf:v",
                   "h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+leak", planted)
            planted.replace(out_path)
        else:
            ffmpeg("-i", plan.clips[0].info.path, "-c", "copy", "-map_metadata", "-1", "-fflags", "+bitexact",
                   "-f", "mp4", out_path)
        return result

    monkeypatch.setattr(pipeline, "render", damaged)
    with pytest.raises(errors.VerificationError) as caught:
        process_case(CaseRequest(folder), options(tmp_path, mode="advanced", segments_file=segments))
    expected_check = {"corrupt_bytes": "decodes_cleanly", "planted_tag": "metadata_allow_list",
                      "unredacted": "redaction", "hidden_samples": "no_hidden_samples",
                      "sei_user_data": "metadata_allow_list"}[damage]
    assert expected_check in caught.value.failed_checks
    assert list((tmp_path / "shared").iterdir()) == []
    assert not (tmp_path / "archive" / "mapping.csv").exists()


def run_cli_without_root_bypass(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI so that file permissions apply even for root (CI runs as root): drop the two
    capabilities that let root ignore them."""
    command = [sys.executable, "-m", "endoshare", *map(str, args)]
    if os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_unreadable_clip_and_unwritable_output_are_clear_errors(tmp_path: Path) -> None:
    good = case_with(tmp_path, "good", {"a.mp4": None})
    locked = case_with(tmp_path, "locked", {"a.mp4": None, "b.mp4": None})
    (locked / "b.mp4").chmod(0)
    out = tmp_path / "shared"
    proc = run_cli_without_root_bypass("process", good, locked, "--out", out, "--archive", tmp_path / "archive",
                                       "--json")
    assert proc.returncode == 1, proc.stderr
    cases = json.loads(proc.stdout)["cases"]
    assert [c["status"] for c in cases] == ["ok", "failed"]
    assert "b.mp4" in cases[1]["error"] and "read access" in cases[1]["error"]

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    proc = run_cli_without_root_bypass("process", good, "--out", readonly, "--archive", tmp_path / "archive",
                                       "--json")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["cases"][0]["error"]
    assert str(readonly) in error and "write" in error
    assert list(readonly.iterdir()) == []


def test_temp_files_of_killed_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import subprocess as sp

    from endoshare.pipeline import TEMP_SUFFIX
    from endoshare.storage import host_tag, temp_name

    shared = tmp_path / "shared"
    shared.mkdir()
    dead = sp.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = shared / f".endoshare-p.{host_tag()}.{int(dead.stdout)}.{'a' * 16}{TEMP_SUFFIX}"
    live = shared / temp_name("p", TEMP_SUFFIX)           # this very process: alive
    other_host = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    elsewhere = shared / f".endoshare-p.{other_host}.{int(dead.stdout)}.{'b' * 16}{TEMP_SUFFIX}"
    for path in (stale, live, elsewhere):
        path.write_bytes(b"half a video")
    process_case(CaseRequest(case_with(tmp_path, "case", {"a.mp4": None})), options(tmp_path))
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()
