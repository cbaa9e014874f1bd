"""OOBNet numpy runtime: equal to TensorFlow/Keras 2, strict about its weights file, stateful."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from endoshare.cli import models as models_cli
from endoshare.detect import oobnet
from endoshare.detect.base import Detector
from endoshare.detect.oobnet import OOBNetDetector, WeightsError

REFERENCE_TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_oobnet_reference.py"


def write_keras2_weights(path: Path, seed: int = 7, *, head_overrides: dict[str, Any] | None = None,
                         drop_backbone: str | None = None) -> Path:
    """A file in the layout Keras 2 ``save_weights`` gives a Sequential (random values).

    ``head_overrides`` replaces head weights by ``<layer>/<weight>`` (e.g. a wrongly shaped LSTM
    kernel); ``drop_backbone`` leaves one MobileNetV2 weight out.
    """
    rng = np.random.default_rng(seed)
    head_overrides = head_overrides or {}
    layer_names = ["mobilenetv2_1.00_64", "flatten", "layer_normalization", "dropout", "lambda", "lstm",
                   "layer_normalization_1", "dense"]
    head_groups = {"layer_normalization": {"gamma": (5120,), "beta": (5120,)},
                   "lstm": {"kernel": (5120, 2560), "recurrent_kernel": (640, 2560), "bias": (2560,)},
                   "layer_normalization_1": {"gamma": (640,), "beta": (640,)},
                   "dense": {"kernel": (640, 1), "bias": (1,)}}
    with h5py.File(path, "w") as root:
        root.attrs["layer_names"] = [name.encode() for name in layer_names]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.8.0"
        backbone = root.create_group(layer_names[0])
        names = []
        for name, shape in oobnet.backbone_weight_shapes().items():
            if name == drop_backbone:
                continue
            if name.endswith("moving_variance") or name.endswith("gamma"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.2, shape)
            names.append(f"{name}:0")
            backbone[f"{name}:0"] = value.astype(np.float32)
        backbone.attrs["weight_names"] = [n.encode() for n in names]
        for layer in layer_names[1:]:
            group = root.create_group(layer)
            weights = head_groups.get(layer, {})
            cell = "lstm_cell/" if layer == "lstm" else ""
            full_names = [f"{layer}/{cell}{w}:0" for w in weights]
            for full_name, (weight, shape) in zip(full_names, weights.items(), strict=True):
                value = head_overrides.get(f"{layer}/{weight}")
                if value is None:
                    value = rng.normal(0.0, 0.05, shape) + (1.0 if weight == "gamma" else 0.0)
                group[full_name] = np.asarray(value, dtype=np.float32)
            group.attrs["weight_names"] = [n.encode() for n in full_names]
    return path


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_keras2_weights(tmp_path_factory.mktemp("oobnet") / "oobnet_weights.h5")


@pytest.fixture(scope="module")
def detector(weights_file: Path) -> OOBNetDetector:
    return OOBNetDetector(weights_file)


def random_frames(count: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Equivalence with the Keras original


def _tensorflow_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tf_keras"))


@pytest.mark.tensorflow
@pytest.mark.skipif(not _tensorflow_available(),
                    reason="needs the oobnet-reference extra (tensorflow-cpu, tf-keras)")
def test_scores_equal_keras2_with_random_weights(tmp_path: Path) -> None:
    # TensorFlow runs in its own process: its threads and ~1 GB stay out of the test runner.
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(REFERENCE_TOOL), "--out", str(tmp_path), "--seed", "11",
                             "--calls", "3,5,4"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "calls.json").read_text())
    assert meta["keras"].startswith("2."), meta
    frames = np.load(tmp_path / "frames.npy")
    expected = np.load(tmp_path / "probabilities.npy")
    assert len(frames) == 12
    # Random weights must give varied scores, or agreement would prove little.
    assert float(np.ptp(expected)) > 0.05

    detector = OOBNetDetector(tmp_path / "oobnet_weights.h5")
    scores, start = [], 0
    for count in meta["calls"]:
        scores.append(detector.score(frames[start:start + count]))
        start += count
    ours = np.concatenate(scores)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    max_difference = float(np.max(np.abs(ours - expected)))
    print(f"max abs difference to TensorFlow: {max_difference:.3g}")
    assert max_difference < 1e-4

    features = oobnet.backbone_features(detector.weights, frames)
    np.testing.assert_allclose(features, np.load(tmp_path / "features.npy"), atol=2e-3, rtol=0)

    detector.reset()
    np.testing.assert_allclose(detector.score(frames[:meta["calls"][0]]),
                               np.load(tmp_path / "after_reset.npy"), atol=1e-4, rtol=0)

    # The carried state matters: the second call scored from a fresh state would disagree.
    detector.reset()
    second = slice(meta["calls"][0], meta["calls"][0] + meta["calls"][1])
    assert np.max(np.abs(detector.score(frames[second]) - expected[second])) > 1e-3

    resized = oobnet.resize_like_tensorflow(np.load(tmp_path / "resize_input.npy"))
    np.testing.assert_allclose(resized, np.load(tmp_path / "resize_output.npy"), atol=1e-3, rtol=0)


# --------------------------------------------------------------------------------------------------
# The detector


def test_detector_follows_protocol(detector: OOBNetDetector) -> None:
    assert isinstance(detector, Detector)
    assert (detector.name, detector.stateful, detector.input_size, detector.threshold) == \
        ("oobnet", True, (64, 64), 0.5)


def test_one_call_equals_frame_by_frame(detector: OOBNetDetector) -> None:
    frames = random_frames(6)
    detector.reset()
    together = detector.score(frames)
    detector.reset()
    one_by_one = np.concatenate([detector.score(frames[i:i + 1]) for i in range(len(frames))])
    assert together.shape == (6,) and np.all((together >= 0) & (together <= 1))
    np.testing.assert_allclose(together, one_by_one, atol=1e-5, rtol=0)


def test_reset_restores_initial_state(detector: OOBNetDetector) -> None:
    frames = random_frames(4, seed=5)
    detector.reset()
    hidden, cell = detector.state
    assert not hidden.any() and not cell.any()
    first = detector.score(frames)
    assert detector.state[0].any()
    carried = detector.score(frames)
    assert np.max(np.abs(carried - first)) > 1e-4, "state carried over should change the scores"
    detector.reset()
    assert not detector.state[0].any() and not detector.state[1].any()
    np.testing.assert_array_equal(detector.score(frames), first)


def test_float_frames_and_empty_batch(detector: OOBNetDetector) -> None:
    frames = random_frames(2, seed=9)
    detector.reset()
    as_uint8 = detector.score(frames)
    detector.reset()
    np.testing.assert_allclose(detector.score(frames.astype(np.float32)), as_uint8, atol=1e-6)
    state = detector.state
    assert detector.score(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0,)
    np.testing.assert_array_equal(detector.state[0], state[0])


def test_wrong_frame_shape_is_refused(detector: OOBNetDetector) -> None:
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        detector.score(np.zeros((2, 54, 96, 3), np.uint8))


def test_resize_keeps_flat_colour_and_maps_corners() -> None:
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[...] = (200, 10, 50)
    resized = oobnet.resize_like_tensorflow(frame)
    assert resized.shape == (64, 64, 3)
    np.testing.assert_allclose(resized, np.broadcast_to([200, 10, 50], (64, 64, 3)))
    ramp = np.tile(np.arange(128, dtype=np.float32)[None, :, None], (64, 1, 3))
    # Half-pixel centres: output column j samples input column 2j + 0.5.
    np.testing.assert_allclose(oobnet.resize_like_tensorflow(ramp)[0, :, 0], np.arange(64) * 2 + 0.5)


# --------------------------------------------------------------------------------------------------
# The weights file


def assert_helpful(error: WeightsError, path: Path) -> None:
    text = str(error)
    assert str(path) in text
    assert "oobnet_weights.h5" in text and "--weights" in text and oobnet.WEIGHTS_ENV_VAR in text
    assert isinstance(error, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "oobnet_weights.h5"
    with pytest.raises(WeightsError, match="not found") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_truncated_file(tmp_path: Path, weights_file: Path) -> None:
    path = tmp_path / "oobnet_weights.h5"
    with open(weights_file, "rb") as source:
        path.write_bytes(source.read(weights_file.stat().st_size // 2))
    with pytest.raises(WeightsError, match="truncated") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_file_that_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "oobnet_weights.h5"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsError, match="not an HDF5 file") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_wrongly_shaped_layer(tmp_path: Path) -> None:
    path = write_keras2_weights(tmp_path / "oobnet_weights.h5",
                                head_overrides={"lstm/kernel": np.zeros((5120, 2048), np.float32)})
    with pytest.raises(WeightsError, match=r"'kernel' of layer 'lstm' has shape \(5120, 2048\), "
                                           r"expected \(5120, 2560\)") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_backbone_missing_a_layer(tmp_path: Path) -> None:
    path = write_keras2_weights(tmp_path / "oobnet_weights.h5", drop_backbone="block_7_expand/kernel")
    with pytest.raises(WeightsError, match="block_7_expand/kernel") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_keras3_layout_is_named(tmp_path: Path) -> None:
    path = tmp_path / "oobnet_weights.h5"
    with h5py.File(path, "w") as root:
        root.create_group("layers/mobilenetv2/vars")["0"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match="Keras 3") as caught:
        OOBNetDetector(path)
    assert_helpful(caught.value, path)


def test_weights_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(oobnet.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert oobnet.default_weights_path() == tmp_path / ".local/share/endoshare/oobnet_weights.h5"
    monkeypatch.setenv(oobnet.WEIGHTS_ENV_VAR, str(tmp_path / "env.h5"))
    assert oobnet.default_weights_path() == tmp_path / "env.h5"
    assert oobnet.resolve_weights_path(None) == tmp_path / "env.h5"
    assert oobnet.resolve_weights_path(tmp_path / "explicit.h5") == tmp_path / "explicit.h5"


def test_weights_status(tmp_path: Path, weights_file: Path) -> None:
    missing = oobnet.weights_status(tmp_path / "oobnet_weights.h5")
    assert (missing.found, missing.ready) == (False, False) and "not found" in (missing.problem or "")
    assert missing.describe().startswith("missing")
    found = oobnet.weights_status(weights_file)
    assert (found.found, found.ready, found.problem) == (True, True, None)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\0" * 100)
    unusable = oobnet.weights_status(bad)
    assert (unusable.found, unusable.ready) == (True, False) and "HDF5" in (unusable.problem or "")


# --------------------------------------------------------------------------------------------------
# endoshare models


def run_models(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    models_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", *argv])
    out = io.StringIO()
    code = models_cli.list_models(models_cli.ModelsOptions(as_json=args.as_json), out)
    assert args.func is models_cli.run
    return code, out.getvalue()


def test_models_lists_oobnet_ready_when_weights_present(monkeypatch: pytest.MonkeyPatch,
                                                         weights_file: Path) -> None:
    monkeypatch.setenv(oobnet.WEIGHTS_ENV_VAR, str(weights_file))
    code, text = run_models("--json")
    assert code == 0
    detectors = {d["name"]: d for d in json.loads(text)["detectors"]}
    assert {"builtin", "oobnet"} <= set(detectors)
    assert detectors["oobnet"]["ready"] is True
    assert detectors["oobnet"]["weights_path"] == str(weights_file)
    assert detectors["oobnet"]["problem"] is None


def test_models_says_how_to_get_missing_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "oobnet_weights.h5"
    monkeypatch.setenv(oobnet.WEIGHTS_ENV_VAR, str(missing))
    code, text = run_models()
    assert code == 0
    block = text[text.index("oobnet:"):]
    assert "NOT READY" in block.splitlines()[0]
    assert f"weights: {missing}" in block
    assert "problem:" in block and "--weights" in block
    assert "builtin:" in text


def test_video_path_resizes_like_tensorflow(tmp_path: Path, detector: OOBNetDetector) -> None:
    """Scores over a video equal OOBNet fed every decoded frame resized by tf.image.resize's rule."""
    import av

    from endoshare.detect.run import detect_video
    from endoshare.sample import synthetic_frames, write_clip

    video = tmp_path / "clip.mp4"
    write_clip(video, synthetic_frames([False] * 12 + [True] * 12, 320, 180, seed=5))
    result = detect_video(video, detector)
    with av.open(str(video)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    detector.reset()
    expected = detector.score(oobnet.resize_like_tensorflow(full))
    assert result.sample_frames.tolist() == list(range(24))
    assert np.abs(result.sample_scores - expected).max() < 1e-5


def test_stills_are_resized_like_tensorflow_too(tmp_path: Path, detector: OOBNetDetector) -> None:
    import av

    from endoshare.evaluation import read_stills_table, score_stills
    from endoshare.synthetic import oob_frame

    image = oob_frame(np.random.default_rng(2), 200, 120, 0.0)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    with av.open(str(tmp_path / "still.png"), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 200, 120, "rgb24"
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    (tmp_path / "frames.tsv").write_text("file\tlabel\nstill.png\toob\n")
    scores = score_stills(read_stills_table(tmp_path / "frames.tsv"), detector)
    detector.reset()
    assert scores[0] == pytest.approx(float(detector.score(oobnet.resize_like_tensorflow(image[None]))[0]), abs=1e-6)
