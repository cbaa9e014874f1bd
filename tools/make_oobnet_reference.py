"""Build an OOBNet-shaped Keras 2 model with random weights and record what TensorFlow computes.

Only for the equivalence test of ``endoshare.detect.oobnet`` (and by hand when debugging it); it
needs the ``oobnet-reference`` extra (``tensorflow-cpu`` and ``tf-keras``).  The model follows the
OOBNet paper's published definition (Lavanchy et al., Sci Rep 2023): MobileNetV2 without top on
64x64 RGB, Flatten, LayerNormalization, a no-op Dropout, a Lambda that turns the batch into one
time sequence, a stateful LSTM(640), LayerNormalization and Dense(1, sigmoid).  Every weight is
random (seeded), including BatchNorm moving statistics and LayerNorm gamma/beta, so that a runtime
which ignored any of them would disagree.

Writes into ``--out``: ``oobnet_weights.h5`` (``save_weights`` of the Keras 2 ``Sequential``, the
legacy HDF5 layout of the published file), ``frames.npy`` (uint8 RGB, 64x64), ``calls.json`` (how
the frames were split into successive ``model(...)`` calls), ``probabilities.npy`` (one score per
frame, state carried across calls), ``after_reset.npy`` (scores of the first frames again after
``reset_states``), ``features.npy`` (MobileNetV2 output, flattened) and, for the resize check,
``resize_input.npy`` / ``resize_output.npy`` (``tf.image.resize`` bilinear to 64x64).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Keras 3 writes a different HDF5 layout; the published weights were saved by Keras 2.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402


def build_oobnet(tf):  # type: ignore[no-untyped-def]
    keras = tf.keras
    model = keras.models.Sequential()
    model.add(keras.layers.Input([64, 64, 3], dtype=tf.float32))
    model.add(keras.applications.MobileNetV2(input_shape=[64, 64, 3], alpha=1.0, include_top=False,
                                             weights=None))
    model.add(keras.layers.Flatten())
    model.add(keras.layers.LayerNormalization())
    model.add(keras.layers.Dropout(0))
    model.add(keras.layers.Lambda(lambda x: tf.expand_dims(x, 0)))
    model.add(keras.layers.LSTM(units=640, return_sequences=True, stateful=True))
    model.add(keras.layers.LayerNormalization())
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    return model


def randomise_weights(model, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    """Replace the initial values so that no parameter keeps a neutral default (0, 1)."""
    for weight in model.weights:
        name = weight.name
        shape = tuple(weight.shape)
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "moving_mean" in name:
            value = rng.normal(0.0, 0.3, shape)
        elif "gamma" in name:
            value = rng.uniform(0.6, 1.4, shape)
        elif "beta" in name:
            value = rng.normal(0.0, 0.3, shape)
        elif "bias" in name:
            value = rng.normal(0.0, 0.2, shape)
        else:
            # He-like scale on the fan-in keeps activations alive through 17 residual blocks.
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            if "depthwise" in name:
                fan_in = int(np.prod(shape[:2]))
            value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        weight.assign(value.astype(np.float32))


def synthetic_frames(rng: np.random.Generator, count: int) -> np.ndarray:
    """Smooth colour fields plus noise: varied enough that every frame scores differently."""
    frames = []
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    for _ in range(count):
        coarse = rng.uniform(0, 255, (4, 4, 3))
        smooth = np.kron(coarse, np.ones((16, 16, 1)))
        gradient = (rng.uniform(-80, 80, 3) * (xx[..., None] - yy[..., None]))
        noise = rng.normal(0, 20, (64, 64, 3))
        frames.append(np.clip(smooth + gradient + noise, 0, 255))
    return np.stack(frames).round().astype(np.uint8)


def _keras_version(tf) -> str:  # type: ignore[no-untyped-def]
    try:
        import tf_keras
        if tf.keras.__name__.startswith("tf_keras"):
            return str(tf_keras.__version__)
    except ImportError:
        pass
    return str(getattr(tf.keras, "__version__", "3"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the files into")
    parser.add_argument("--seed", type=int, default=20231)
    parser.add_argument("--calls", default="3,5,4", help="frames per successive call, e.g. 3,5,4")
    args = parser.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras_version = _keras_version(tf)
    if not keras_version.startswith("2."):
        print(f"tf.keras is Keras {keras_version}, not Keras 2: install tf-keras", file=sys.stderr)
        return 2

    calls = [int(part) for part in args.calls.split(",")]
    rng = np.random.default_rng(args.seed)
    tf.keras.utils.set_random_seed(args.seed)
    model = build_oobnet(tf)
    randomise_weights(model, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(args.out / "oobnet_weights.h5"))

    frames = synthetic_frames(rng, sum(calls))
    preprocessed = tf.keras.applications.mobilenet_v2.preprocess_input(frames.astype(np.float32))

    probabilities = []
    start = 0
    for count in calls:
        out = model(preprocessed[start:start + count], training=False).numpy()
        probabilities.append(out[0, :, 0])
        start += count
    model.reset_states()
    first = calls[0]
    after_reset = model(preprocessed[:first], training=False).numpy()[0, :, 0]
    features = tf.keras.layers.Flatten()(model.layers[0](preprocessed, training=False)).numpy()

    resize_input = rng.integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    resize_output = tf.image.resize(tf.cast(resize_input, tf.float32), [64, 64]).numpy()

    np.save(args.out / "frames.npy", frames)
    np.save(args.out / "probabilities.npy", np.concatenate(probabilities).astype(np.float32))
    np.save(args.out / "after_reset.npy", after_reset.astype(np.float32))
    np.save(args.out / "features.npy", features.astype(np.float32))
    np.save(args.out / "resize_input.npy", resize_input)
    np.save(args.out / "resize_output.npy", resize_output.astype(np.float32))
    (args.out / "calls.json").write_text(json.dumps({"calls": calls, "keras": keras_version,
                                                     "tensorflow": tf.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
