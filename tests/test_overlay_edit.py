"""Overlay regions edited by hand (the review screen): pure operations on an OverlaySet, the overlays file,
and a re-render that masks exactly the given regions, in fast and advanced mode."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare.errors import OverlaysFileError
from endoshare.jobs.queue import JobQueue
from endoshare.jobs.review import replace_job
from endoshare.overlay.mask import FILL_Y
from endoshare.overlay.regions import (
    OverlayRegion,
    OverlaySet,
    add_region,
    load_overlays_file,
    move_region,
    region_problem,
    remove_region,
    replace_region,
    set_kind,
    shown_regions,
)
from endoshare.overlay.text import Box
from endoshare.pipeline import CaseRequest, ProcessOptions, overlays_path, process_case
from overlay_media import STYLES, overlay_clip, patient_lines

WIDTH, HEIGHT, FRAMES = 640, 360, 75


def region(x0: int, y0: int, x1: int, y1: int, start: int, end: int, kind: str = "manual") -> OverlayRegion:
    return OverlayRegion(Box(x0, y0, x1, y1), start, end, kind)


# --- pure operations -------------------------------------------------------------------------------------

def test_add_move_remove_and_kind_change_give_new_sets() -> None:
    found = OverlaySet.of([region(0, 0, 100, 20, 0, 50, "overlay")], samples=(0, 25))
    added = add_region(found, region(10, 300, 200, 340, 5, 9), WIDTH, HEIGHT, FRAMES)
    assert len(added.regions) == 2 and added.samples == (0, 25) and len(found.regions) == 1   # found unchanged
    assert added.boxes_at(5) == (Box(0, 0, 100, 20), Box(10, 300, 200, 340))
    assert added.boxes_at(9) == (Box(0, 0, 100, 20),)
    old = added.regions[0]
    moved = move_region(old, box=Box(5, 5, 105, 25), end_frame=60)
    assert moved.kind == "manual" and moved.masked and (moved.start_frame, moved.end_frame) == (0, 60)
    edited = replace_region(added, old, moved, WIDTH, HEIGHT, FRAMES)
    assert old not in edited.regions and moved in edited.regions and edited.boxes_at(55) == (Box(5, 5, 105, 25),)
    shown = set_kind(moved, "transient")
    assert not shown.masked and set_kind(shown, "overlay").masked
    kept = replace_region(edited, moved, shown, WIDTH, HEIGHT, FRAMES)
    assert kept.boxes_at(0) == () and shown_regions(kept, 0) == (shown,)     # shown, not masked
    removed = remove_region(edited, moved)
    assert removed.regions == (region(10, 300, 200, 340, 5, 9),)
    with pytest.raises(ValueError):
        remove_region(removed, moved)                  # not in the set


@pytest.mark.parametrize("bad, words", [
    (region(600, 0, 641, 20, 0, 5), "outside the 640x360 picture"),
    (region(0, 350, 10, 361, 0, 5), "outside the 640x360 picture"),
    (region(0, 0, 10, 10, 70, 76), "case has 75 frames"),
])
def test_a_region_must_fit_the_picture_and_the_case(bad: OverlayRegion, words: str) -> None:
    assert words in (region_problem(bad, WIDTH, HEIGHT, FRAMES) or "")
    with pytest.raises(ValueError, match=words.split()[0]):
        add_region(OverlaySet(), bad, WIDTH, HEIGHT, FRAMES)
    assert region_problem(region(0, 0, WIDTH, HEIGHT, 0, FRAMES), WIDTH, HEIGHT, FRAMES) is None
    with pytest.raises(ValueError):
        region(10, 10, 10, 20, 0, 5)                  # empty box
    with pytest.raises(ValueError):
        region(0, 0, 10, 10, 5, 5)                    # empty span


def test_overlays_file_reads_back_and_names_the_file_when_wrong(tmp_path: Path) -> None:
    overlays = OverlaySet.of([region(10, 20, 30, 40, 0, 10), region(0, 0, 5, 5, 3, 4, "transient")])
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(overlays.to_json()), encoding="utf-8")
    assert load_overlays_file(path) == overlays == load_overlays_file(path, WIDTH, HEIGHT, FRAMES)
    with pytest.raises(OverlaysFileError, match="case has 9 frames"):
        load_overlays_file(path, WIDTH, HEIGHT, 9)
    for text, words in (("{", "not readable JSON"), ('{"segments": []}', "no 'regions' list"),
                        ('{"regions": [{"x0": 5, "y0": 0, "x1": 1, "y1": 4, "start_frame": 0, "end_frame": 1}]}',
                         "malformed"),
                        ('{"regions": [{"x0": 0}]}', "malformed")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(OverlaysFileError, match=words) as error:
            load_overlays_file(path)
        assert str(path) in str(error.value)
    with pytest.raises(OverlaysFileError, match="does not exist"):
        ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a", overlays_file=tmp_path / "gone.json")


# --- a re-render with a given region set ----------------------------------------------------------------

def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p")[:HEIGHT] for f in container.decode(video=0)]


def filled(luma: np.ndarray, box: Box) -> bool:
    part = np.abs(luma[box.y0:box.y1, box.x0:box.x1].astype(np.int16) - FILL_Y)
    return float(part.mean()) <= 3 and float(np.percentile(part, 95)) <= 12


@pytest.fixture(scope="module")
def text_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edit") / "case"
    folder.mkdir()
    overlay_clip(folder / "clip1.mp4", FRAMES, STYLES[0], patient_lines(seed=0), width=WIDTH, height=HEIGHT)
    return folder


#: A hand-edited set: two regions over the in-body picture in the first GOP; the recorder text is not in it.
EDITED = OverlaySet.of([region(200, 120, 330, 200, 0, 20), region(400, 220, 520, 300, 5, 24, "overlay")])


@pytest.mark.parametrize("mode", ["fast", "advanced"])
def test_rerender_masks_exactly_the_given_regions(text_case: Path, tmp_path: Path, mode: str) -> None:
    regions_file = tmp_path / "archive" / "reviewed-overlays" / "edit.json"
    regions_file.parent.mkdir(parents=True)
    regions_file.write_text(json.dumps(EDITED.to_json()), encoding="utf-8")
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", mode=mode,
                             detector="none", overlays_file=regions_file)
    result = process_case(CaseRequest(text_case), options)
    assert result.status == "ok", result.error
    assert result.report is not None and result.output is not None and result.pseudonym
    report = json.loads(result.report.read_text(encoding="utf-8"))
    assert OverlaySet.from_json(report["overlays"]) == EDITED          # the finder did not run
    assert report["overlays"]["edited_in_review"] is True and report["settings"]["overlays_from_file"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["overlay-fill"]["passed"] and checks["overlay-text"]["passed"]
    assert str(regions_file) not in result.report.read_text(encoding="utf-8")     # private path stays private
    archived = overlays_path(options.archive_dir, result.pseudonym)
    assert load_overlays_file(archived) == EDITED                      # what the review screen reads back
    assert not list(options.out_dir.glob("*overlays*"))

    frames, source = decode(result.output), decode(text_case / "clip1.mp4")
    assert len(frames) == len(source) == FRAMES
    for index, (out, src) in enumerate(zip(frames, source, strict=True)):
        outside = np.ones((HEIGHT, WIDTH), bool)
        for r in EDITED.regions:
            applies = r.start_frame <= index < r.end_frame
            assert filled(out, r.box) == applies, (mode, index, r)
            if applies:
                outside[r.box.y0:r.box.y1, r.box.x0:r.box.x1] = False
        diff = np.abs(out.astype(np.int16) - src.astype(np.int16))
        if mode == "fast" and index >= 25:
            assert diff.max() == 0, (index, "a group without a region is copied untouched")
        else:
            assert diff[outside].mean() < 2.0, (mode, index)


def test_replace_job_carries_the_overlays_file(tmp_path: Path, text_case: Path) -> None:
    queue = JobQueue(tmp_path / "archive")
    options = ProcessOptions(out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none")
    job = queue.add(text_case, options, "P1")
    spans, regions = tmp_path / "archive" / "spans.json", tmp_path / "archive" / "regions.json"
    spans.write_text('{"segments": []}', encoding="utf-8")
    regions.write_text(json.dumps(EDITED.to_json()), encoding="utf-8")
    new = replace_job(queue, job.id, spans, regions)
    assert queue.get(new.id).options.overlays_file == regions
    again = replace_job(queue, new.id, spans)                     # a later span edit keeps the edited regions
    assert queue.get(again.id).options.overlays_file == regions


def test_cli_masks_the_regions_of_an_overlays_file(text_case: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from endoshare.cli import main as cli_main

    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps(EDITED.to_json()), encoding="utf-8")
    common = ["process", str(text_case), "--out", str(tmp_path / "shared"), "--archive", str(tmp_path / "archive"),
              "--detector", "none", "--mode", "advanced", "--json"]
    assert cli_main([*common, "--overlays", str(regions)]) == 0
    report = json.loads(next((tmp_path / "shared").glob("*.report.json")).read_text(encoding="utf-8"))
    assert OverlaySet.from_json(report["overlays"]) == EDITED and report["overlays"]["edited_in_review"]
    frames = decode(next((tmp_path / "shared").glob("*.mp4")))
    assert filled(frames[10], EDITED.regions[0].box) and not filled(frames[30], EDITED.regions[0].box)
    # A file that does not fit the case: refused for that case, naming the file and the reason.
    regions.write_text(json.dumps(OverlaySet.of([region(0, 0, 10, 10, 0, FRAMES + 1)]).to_json()), encoding="utf-8")
    capsys.readouterr()
    assert cli_main([*common, "--overlays", str(regions)]) != 0
    out = capsys.readouterr()
    assert str(regions) in out.out + out.err and "case has 75 frames" in out.out + out.err
