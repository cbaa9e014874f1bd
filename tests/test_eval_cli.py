"""``endoshare eval`` and the evaluation core: figures on labelled stills, ROC AUC, clear failures."""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare import synthetic
from endoshare.cli import eval as eval_cli
from endoshare.detect.builtin import BuiltinDetector
from endoshare.errors import MissingInputError
from endoshare.evaluation import evaluate_detector, evaluate_scores, load_still, read_stills_table, roc_auc


def write_png(path: Path, image: np.ndarray) -> Path:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture()
def stills_table(tmp_path: Path) -> Path:
    """A small labelled-stills table in the frames.tsv format, images generated here."""
    (tmp_path / "frames").mkdir()
    rows = ["file\tlabel\tsource_repo\tsource_path\tcommit\tlicense\tnotes"]
    specs = ([("inbody", synthetic.inbody_frame, i) for i in range(6)]
             + [("oob", synthetic.oob_frame, i) for i in range(4)])
    for label, generate, seed in specs:
        name = f"frames/{label}_{seed}.png"
        write_png(tmp_path / name, generate(np.random.default_rng(900 + seed), 320, 180, 0.0))
        rows.append(f"{name}\t{label}\tsynthetic\t{name}\t-\tMIT\tgenerated")
    write_png(tmp_path / "frames/black.png", np.zeros((90, 160, 3), np.uint8))
    rows.append("frames/black.png\tblank_black\tsynthetic\tblack.png\t-\tMIT\tall black")
    table = tmp_path / "frames.tsv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return table


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="endoshare")
    eval_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    command = eval_cli.StillsEvalCommand(table=args.table, detector=args.detector, weights=args.weights,
                                         threshold=args.threshold, as_json=args.as_json, show_progress=False)
    out, err = io.StringIO(), io.StringIO()
    code = eval_cli.eval_stills_command(command, out, err)
    return code, out.getvalue(), err.getvalue()


# --- ROC AUC on hand-made cases -------------------------------------------------------------------

def test_roc_auc_perfect_reversed_and_chance() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5


def test_roc_auc_counts_pairs_and_half_ties() -> None:
    # Pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, *) two wins -> 3 of 4.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # One positive tied with one negative and above the other: (0.5 + 1) / 2.
    assert roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    # Several tie groups: pos {0.3, 0.7, 0.7}, neg {0.3, 0.7, 0.1}.
    # wins: 0.3 > 0.1 (1) + tie 0.3 (0.5); each 0.7 > 0.3, 0.1 (2) + tie 0.7 (0.5) -> 1.5 + 2.5 + 2.5 = 6.5 of 9.
    assert roc_auc([0.3, 0.7, 0.7, 0.3, 0.7, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx(6.5 / 9)


def test_roc_auc_of_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([0.1, 0.9], [1, 1]))
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.9], [1])


def test_evaluate_scores_counts_each_label() -> None:
    labels = ["oob", "oob", "oob", "inbody", "inbody", "ambiguous", "ambiguous"]
    scores = [0.9, 0.6, 0.2, 0.1, 0.7, 0.5, 0.4]
    result = evaluate_scores(labels, scores, threshold=0.5)
    assert result.oob_recall == pytest.approx(2 / 3)
    assert result.inbody_kept == pytest.approx(1 / 2)
    assert (result.n_oob, result.n_inbody) == (3, 2)
    # oob {0.9, 0.6, 0.2} vs inbody {0.1, 0.7}: wins 2 + 1 + 1 = 4 of 6.
    assert result.roc_auc == pytest.approx(4 / 6)
    (ambiguous,) = result.other_labels
    assert (ambiguous.label, ambiguous.count, ambiguous.flagged_share) == ("ambiguous", 2, 0.5)


# --- the core on a generated table ------------------------------------------------------------------

def test_load_still_resizes_the_whole_picture(tmp_path: Path) -> None:
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, :80] = (255, 0, 0)  # left half red, right half black
    still = load_still(write_png(tmp_path / "half.png", image), (32, 18))
    assert still.shape == (18, 32, 3)
    assert still[:, :14, 0].min() > 200 and still[:, 18:, 0].max() < 40


def test_read_stills_table_resolves_paths_and_names_missing_images(stills_table: Path) -> None:
    stills = read_stills_table(stills_table)
    assert len(stills) == 11 and all(s.path.is_file() for s in stills)
    assert {s.label for s in stills} == {"inbody", "oob", "blank_black"}
    (stills_table.parent / "frames/oob_0.png").unlink()
    with pytest.raises(MissingInputError, match="oob_0.png"):
        read_stills_table(stills_table)


# --- the command ------------------------------------------------------------------------------------

def test_json_output_matches_a_direct_computation(stills_table: Path) -> None:
    code, out, err = run_cli(["eval", str(stills_table), "--json"])
    assert code == 0, err
    data = json.loads(out)
    direct = evaluate_detector(stills_table, BuiltinDetector())
    for key in ("oob_recall", "inbody_kept", "roc_auc", "n_oob", "n_inbody", "threshold"):
        assert data[key] == pytest.approx(getattr(direct, key)), key
    assert (data["n_oob"], data["n_inbody"]) == (4, 6)
    # The built-in detector separates its own synthetic frames.
    assert data["oob_recall"] == 1.0 and data["inbody_kept"] == 1.0 and data["roc_auc"] == 1.0
    assert [o["label"] for o in data["other_labels"]] == ["blank_black"]


def test_threshold_option_changes_the_decision(stills_table: Path) -> None:
    code, out, _ = run_cli(["eval", str(stills_table), "--json", "--threshold", "0"])
    assert code == 0
    data = json.loads(out)
    assert data["threshold"] == 0 and data["inbody_kept"] == 0.0 and data["oob_recall"] == 1.0


def test_human_output_lists_the_figures(stills_table: Path) -> None:
    code, out, _ = run_cli(["eval", str(stills_table)])
    assert code == 0
    assert "out-of-body recall:  100.0 % of 4" in out
    assert "in-body kept:        100.0 % of 6" in out
    assert "blank_black" in out


def test_table_without_oob_frames_gives_null_figures(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", synthetic.inbody_frame(np.random.default_rng(1), 160, 90, 0.0))
    table = tmp_path / "only_inbody.tsv"
    table.write_text("file\tlabel\na.png\tinbody\n", encoding="utf-8")
    code, out, _ = run_cli(["eval", str(table), "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["oob_recall"] is None and data["roc_auc"] is None and data["inbody_kept"] == 1.0


def test_missing_table_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tsv"
    code, out, err = run_cli(["eval", str(missing), "--json"])
    assert code == 2 and out == ""
    assert str(missing) in err and "does not exist" in err


def test_missing_image_is_a_usage_error_naming_it(stills_table: Path) -> None:
    (stills_table.parent / "frames/inbody_3.png").unlink()
    code, _, err = run_cli(["eval", str(stills_table)])
    assert code == 2
    assert "inbody_3.png" in err and "line" in err


def test_undecodable_image_is_a_usage_error_naming_it(stills_table: Path) -> None:
    (stills_table.parent / "frames/oob_2.png").write_bytes(b"not a png")
    code, _, err = run_cli(["eval", str(stills_table)])
    assert code == 2 and "oob_2.png" in err


def test_table_without_label_column_is_a_usage_error(tmp_path: Path) -> None:
    table = tmp_path / "bad.tsv"
    table.write_text("file\tkind\na.png\toob\n", encoding="utf-8")
    code, _, err = run_cli(["eval", str(table)])
    assert code == 2 and "label" in err and str(table) in err


def test_corrupt_weights_are_a_usage_error(stills_table: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(["eval", str(stills_table), "--weights", str(bad)])
    assert code == 2 and str(bad) in err


def test_registered_as_the_eval_subcommand(stills_table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from endoshare.cli import main

    assert main(["eval", str(stills_table), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"oob_recall", "inbody_kept", "roc_auc", "n_oob", "n_inbody"} <= data.keys()
    assert main(["eval", str(stills_table.parent / "absent.tsv")]) == 2
    assert "absent.tsv" in capsys.readouterr().err
