"""Built-in detector: figures on the development stills, synthetic frames, speed, strict model file."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare import synthetic
from endoshare.detect.base import Detector
from endoshare.detect.builtin import FEATURE_NAMES, INPUT_SIZE, BuiltinDetector, BuiltinModel, default_model_path
from endoshare.errors import WeightsError
from endoshare.evaluation import evaluate_detector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FRAMES_TSV = DATA / "frames.tsv"
needs_dev_data = pytest.mark.skipif(not FRAMES_TSV.is_file(), reason=f"development stills not found at {DATA}")


def resize_like_video_path(frame: np.ndarray) -> np.ndarray:
    width, height = INPUT_SIZE
    return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        width=width, height=height, format="rgb24").to_ndarray()


def synthetic_batch(generate, seeds: range, width: int = 320, height: int = 180) -> np.ndarray:
    return np.stack([resize_like_video_path(generate(np.random.default_rng(seed), width, height, seed * 0.37))
                     for seed in seeds])


@pytest.fixture(scope="module")
def detector() -> BuiltinDetector:
    return BuiltinDetector()


def test_follows_the_detector_protocol(detector: BuiltinDetector) -> None:
    assert isinstance(detector, Detector)
    assert detector.name == "builtin" and detector.stateful is False
    assert detector.input_size == INPUT_SIZE
    assert 0 < detector.threshold < 1


def test_registry_builds_it() -> None:
    from endoshare.detect.registry import create_detector

    assert isinstance(create_detector("builtin"), BuiltinDetector)


@needs_dev_data
def test_development_stills_figures(detector: BuiltinDetector) -> None:
    result = evaluate_detector(FRAMES_TSV, detector)
    assert result.n_oob >= 7 and result.n_inbody >= 100
    # Privacy first: every real out-of-body endoscope frame is flagged.
    assert result.oob_recall == 1.0
    assert result.inbody_kept >= 0.9
    assert result.roc_auc >= 0.98
    shares = {f.label: f.flagged_share for f in result.other_labels}
    assert shares["oob_or_scene"] >= 0.95
    assert shares["inbody_annotated"] <= 0.2


def test_synthetic_frames_are_classified_correctly(detector: BuiltinDetector) -> None:
    # Seeds far from the training script's, and a second frame shape.
    inbody = np.concatenate([synthetic_batch(synthetic.inbody_frame, range(5000, 5030)),
                             synthetic_batch(synthetic.inbody_frame, range(6000, 6010), 256, 192)])
    oob = np.concatenate([synthetic_batch(synthetic.oob_frame, range(5000, 5030)),
                          synthetic_batch(synthetic.oob_frame, range(6000, 6010), 256, 192)])
    assert (detector.score(inbody) < detector.threshold).all()
    assert (detector.score(oob) >= detector.threshold).all()


def test_scores_are_probabilities_per_frame(detector: BuiltinDetector) -> None:
    frames = synthetic_batch(synthetic.inbody_frame, range(3))
    scores = detector.score(frames)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    # Stateless: a frame's score does not depend on its neighbours in the batch.
    assert detector.score(frames[1:2])[0] == pytest.approx(scores[1], abs=1e-6)
    assert detector.score(np.zeros((0, INPUT_SIZE[1], INPUT_SIZE[0], 3), np.uint8)).shape == (0,)


def test_rejects_frames_of_the_wrong_size(detector: BuiltinDetector) -> None:
    with pytest.raises(ValueError, match="input_size"):
        detector.score(np.zeros((1, 64, 64, 3), np.uint8))


def test_scoring_costs_well_under_a_millisecond_per_frame(detector: BuiltinDetector) -> None:
    frames = np.repeat(synthetic_batch(synthetic.oob_frame, range(8)), 32, axis=0)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        detector.score(frames)
        best = min(best, (time.perf_counter() - started) / len(frames))
    assert best < 1e-3


def test_model_file_is_small_package_data() -> None:
    path = default_model_path()
    assert path.is_file()
    assert path.stat().st_size <= 64 * 1024  # the limit is 5 MB; it is a few kilobytes


def test_missing_model_file_raises_weights_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.npz"
    with pytest.raises(WeightsError, match="does not exist") as info:
        BuiltinDetector(missing)
    assert str(missing) in str(info.value)


def test_corrupt_model_file_raises_weights_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(WeightsError, match="truncated or not a model file"):
        BuiltinDetector(garbage)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(default_model_path().read_bytes()[:700])
    with pytest.raises(WeightsError):
        BuiltinDetector(truncated)


def test_model_of_another_feature_set_raises_weights_error(tmp_path: Path) -> None:
    original = BuiltinModel.load(default_model_path())
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(default_model_path()) as source:
        arrays = {name[:-4]: np.load(source.open(name)) for name in source.namelist()}
    arrays["feature_names"] = np.array([f"x{i}" for i in range(len(FEATURE_NAMES))])
    np.savez(path, **arrays)
    with pytest.raises(WeightsError, match="another version"):
        BuiltinDetector(path)

    nan_weights = tmp_path / "nan.npz"
    BuiltinModel(original.feature_mean, original.feature_scale,
                 np.full_like(original.weights, np.nan), original.bias, original.threshold).save(nan_weights)
    with pytest.raises(WeightsError, match="inconsistent"):
        BuiltinDetector(nan_weights)


def test_model_round_trips_through_save_and_load(tmp_path: Path) -> None:
    original = BuiltinModel.load(default_model_path())
    copy_path = tmp_path / "copy.npz"
    original.save(copy_path)
    frames = synthetic_batch(synthetic.oob_frame, range(4))
    np.testing.assert_array_equal(BuiltinDetector(copy_path).score(frames),
                                  BuiltinDetector(default_model_path()).score(frames))


def test_synthetic_frames_are_deterministic_and_move_slowly() -> None:
    for generate in (synthetic.inbody_frame, synthetic.oob_frame):
        first = generate(np.random.default_rng(11), 320, 180, 2.0)
        again = generate(np.random.default_rng(11), 320, 180, 2.0)
        later = generate(np.random.default_rng(11), 320, 180, 2.2)
        other_scene = generate(np.random.default_rng(12), 320, 180, 2.0)
        assert first.shape == (180, 320, 3) and first.dtype == np.uint8
        np.testing.assert_array_equal(first, again)
        step = np.abs(first.astype(int) - later.astype(int)).mean()
        jump = np.abs(first.astype(int) - other_scene.astype(int)).mean()
        assert 0 < step < jump


def test_inbody_synthetic_frame_has_a_black_surround_and_red_tissue() -> None:
    frame = synthetic.inbody_frame(np.random.default_rng(3), 320, 180, 0.0).astype(int)
    assert frame[:12, :12].max() < 20 and frame[-12:, -12:].max() < 20
    centre = frame[60:120, 120:200]
    assert (centre[..., 0] > centre[..., 2]).mean() > 0.9


def test_oob_synthetic_frame_shows_blue_green_and_grey() -> None:
    frame = synthetic.oob_frame(np.random.default_rng(3), 320, 180, 0.0).astype(int)
    red, green, blue = frame[..., 0], frame[..., 1], frame[..., 2]
    lit = frame.max(axis=2) > 30
    assert ((np.maximum(green, blue) > red + 20) & lit).mean() > 0.05
    assert ((frame.max(axis=2) - frame.min(axis=2) < 20) & (frame.max(axis=2) > 120)).mean() > 0.05


def test_synthetic_generators_are_fast() -> None:
    started = time.perf_counter()
    for i in range(50):
        synthetic.inbody_frame(np.random.default_rng(i), 320, 180, i / 25)
        synthetic.oob_frame(np.random.default_rng(i), 320, 180, i / 25)
    # A few hundred frames in a second or two; generous for a busy CI machine.
    assert (time.perf_counter() - started) / 100 < 0.03


def test_synthetic_clip_through_h264_is_classified_frame_by_frame(tmp_path: Path, detector: BuiltinDetector) -> None:
    """The demo path: synthetic frames encoded as yuv420p H.264, decoded, resized, scored."""
    path = tmp_path / "clip.mp4"
    truth = [False] * 15 + [True] * 15 + [False] * 10
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for index, is_oob in enumerate(truth):
            generate = synthetic.oob_frame if is_oob else synthetic.inbody_frame
            image = generate(np.random.default_rng(41 if is_oob else 42), 320, 180, index / 25)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    width, height = detector.input_size
    with av.open(str(path)) as container:
        frames = np.stack([frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                           for frame in container.decode(video=0)])
    flagged = detector.score(frames) >= detector.threshold
    assert flagged.tolist() == truth
