"""ProcessOptions owns its one record form (queue, audit log), its report form and its defaults: every field
round-trips through JSON, and a field added without its record form fails here."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from endoshare.cli.process import add_process_arguments, options_from_args
from endoshare.detect.smooth import DEFAULT_MARGIN_SECONDS, SmoothingOptions
from endoshare.errors import OptionsError
from endoshare.pipeline import NOT_IN_REPORT, NOT_RECORDED, ProcessOptions
from endoshare.render.common import EncodeSettings, Redaction

FIELDS = {f.name for f in dataclasses.fields(ProcessOptions)}


def every_field_changed(tmp_path: Path) -> dict[str, Any]:
    """A value for every recorded field, each different from its default. Add a new field here (and the
    test of its record form runs on it)."""
    return {
        "out_dir": tmp_path / "archive" / "awaiting-review", "archive_dir": tmp_path / "archive",
        "mode": "advanced", "redaction": Redaction.BLUR, "segments_file": tmp_path / "spans.json",
        "detector": "oobnet", "weights": tmp_path / "w.h5",
        "encode": EncodeSettings(codec="hevc", crf=30, preset="slow", frame_rate=Fraction(30000, 1001), height=480),
        "new_pseudonym": True, "verify": "full", "keep_audio": True, "margin_seconds": Fraction(4, 3),
        "held_for_review": True, "mask_overlays": False, "keep_device_settings": True,
    }


def test_the_test_covers_every_field_with_a_value_other_than_its_default(tmp_path: Path) -> None:
    changed = every_field_changed(tmp_path)
    assert set(changed) == FIELDS - NOT_RECORDED, "a field of ProcessOptions is missing in every_field_changed"
    for name, value in changed.items():
        if name not in ("out_dir", "archive_dir"):
            assert value != ProcessOptions.default(name), name


def test_every_field_round_trips_through_its_json_record(tmp_path: Path) -> None:
    options = ProcessOptions(**every_field_changed(tmp_path), check_files=False)
    record = options.to_record()
    assert set(record) == FIELDS - NOT_RECORDED
    back = ProcessOptions.from_record(json.loads(json.dumps(record)))
    assert back == options
    for name in FIELDS - NOT_RECORDED:
        assert getattr(back, name) == getattr(options, name), name
        assert type(getattr(back, name)) is type(getattr(options, name)), name
    # The defaults round-trip too (None paths, default encoder settings).
    plain = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a")
    assert ProcessOptions.from_record(json.loads(json.dumps(plain.to_record()))) == plain


def test_the_report_shows_every_field_but_the_private_ones(tmp_path: Path) -> None:
    shown = ProcessOptions(**every_field_changed(tmp_path), check_files=False).to_json()
    assert FIELDS - NOT_IN_REPORT <= set(shown), "a new option must be shown in the report or listed as private"
    text = json.dumps(shown)
    assert str(tmp_path) not in text and "awaiting-review" not in text


def test_an_older_record_reads_with_the_safe_defaults(tmp_path: Path) -> None:
    record = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a").to_record()
    for name in ("mask_overlays", "keep_device_settings", "verify", "margin_seconds", "keep_audio"):
        del record[name]
    old = ProcessOptions.from_record(record)
    assert old.mask_overlays is True and old.keep_device_settings is False and old.keep_audio is False
    assert old.verify == "full"                # jobs queued before the verification modes were fully verified
    assert old.margin_seconds == Fraction(1, 2)    # queued under the 0.5 s default of that time


@pytest.mark.parametrize("name, damaged", [
    ("mask_overlays", "false"), ("keep_device_settings", "false"), ("mask_overlays", 0), ("new_pseudonym", "no"),
    ("keep_audio", 1), ("margin_seconds", 0.5), ("margin_seconds", "half"), ("redaction", "pixelate"),
    ("mode", 3), ("out_dir", None), ("encode", {"codec": "h264", "crf": "20"}), ("encode", {"colour": "red"}),
    ("encode", {"crf": 99}), ("verify", "sometimes"),
])
def test_a_damaged_record_is_refused_naming_the_field(tmp_path: Path, name: str, damaged: object) -> None:
    record = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a").to_record()
    with pytest.raises(OptionsError, match=name.split(".")[0] if name != "mode" else "mode"):
        ProcessOptions.from_record({**record, name: damaged})


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    record = ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a").to_record()
    with pytest.raises(OptionsError, match="unknown processing option.*blur_faces"):
        ProcessOptions.from_record({**record, "blur_faces": True})
    with pytest.raises(OptionsError, match="JSON object"):
        ProcessOptions.from_record(["not", "a", "record"])  # type: ignore[arg-type]


def test_the_cli_starts_from_the_same_defaults(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path)
    add_process_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "o"), "--archive", str(tmp_path / "a")])
    built = options_from_args(args)
    assert built == ProcessOptions(out_dir=tmp_path / "o", archive_dir=tmp_path / "a")
    assert SmoothingOptions().margin_seconds == DEFAULT_MARGIN_SECONDS == ProcessOptions.default("margin_seconds")
