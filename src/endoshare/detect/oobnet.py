"""OOBNet (Lavanchy et al., Sci Rep 2023) run from its published Keras weights with numpy only.

The network: MobileNetV2 (alpha 1.0, no top) on 64x64 RGB scaled to [-1, 1] → Flatten →
LayerNormalization → stateful LSTM(640) → LayerNormalization → Dense(1, sigmoid).  The original
turns the batch axis into the LSTM's time axis (a single sequence), so scoring N frames in one call
equals scoring them one by one; the LSTM state is carried across calls until :meth:`reset`.

The published ``oobnet_weights.h5`` was written by Keras 2 ``save_weights`` (legacy HDF5 layout: a
``layer_names`` attribute on the root, a ``weight_names`` attribute on each layer group, the
MobileNetV2 nested as one layer).  We read it with h5py, fold every BatchNorm into the convolution
before it, and run the forward pass in float32 like TensorFlow does.  ``tests/test_oobnet.py``
proves the scores equal TensorFlow's on random weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import WeightsError
from .base import FrameBatch, Scores

WEIGHTS_FILENAME = "oobnet_weights.h5"
WEIGHTS_ENV_VAR = "ENDOSHARE_OOBNET_WEIGHTS"
INPUT_SIZE = (64, 64)  # (width, height)
LSTM_UNITS = 640
#: MobileNetV2 reduces 64x64 by 32 → 2x2x1280 features per frame.
FEATURE_SIZE = 2 * 2 * 1280

HOW_TO_GET_WEIGHTS = (
    f"Get the file {WEIGHTS_FILENAME} from the published release of the OOBNet project "
    "(CAMMA-public/out-of-body-detector, Lavanchy et al. 2023), then pass it with --weights PATH "
    f"or set {WEIGHTS_ENV_VAR}=PATH (default place: ~/.local/share/endoshare/{WEIGHTS_FILENAME}). "
    "Endoshare never downloads it for you.")

# Keras' defaults for the layers OOBNet uses; the weights file does not store them.
_BATCHNORM_EPSILON = 1e-3
_LAYERNORM_EPSILON = 1e-3
# Frames pushed through MobileNetV2 at once: bounds peak memory (~0.5 MB of activations a frame).
_CNN_CHUNK = 32

Array = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------------
# Where the weights are


def default_weights_path() -> Path:
    """``$ENDOSHARE_OOBNET_WEIGHTS`` when set, else ``~/.local/share/endoshare/oobnet_weights.h5``."""
    from_env = os.environ.get(WEIGHTS_ENV_VAR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".local" / "share" / "endoshare" / WEIGHTS_FILENAME


def resolve_weights_path(weights_path: str | os.PathLike[str] | None = None) -> Path:
    """The explicit path when given, else :func:`default_weights_path`."""
    if weights_path is not None and str(weights_path).strip():
        return Path(weights_path).expanduser()
    return default_weights_path()


@dataclass(frozen=True)
class WeightsStatus:
    path: Path
    found: bool
    #: Why the file cannot be used (missing, not HDF5, wrong layout); None when it is usable.
    problem: str | None

    @property
    def ready(self) -> bool:
        return self.found and self.problem is None

    def describe(self) -> str:
        if self.ready:
            return f"found: {self.path}"
        state = "unusable" if self.found else "missing"
        return f"{state}: {self.path} ({self.problem})"


def weights_status(weights_path: str | os.PathLike[str] | None = None) -> WeightsStatus:
    """Whether the weights file exists and has OOBNet's layout (names and shapes; data not read)."""
    path = resolve_weights_path(weights_path)
    if not path.exists():
        return WeightsStatus(path, False, _missing_message(path))
    try:
        _read_weights(path, load_data=False)
    except WeightsError as exc:
        return WeightsStatus(path, True, str(exc))
    return WeightsStatus(path, True, None)


# --------------------------------------------------------------------------------------------------
# The architecture, as Keras' MobileNetV2 builds it for alpha 1.0

@dataclass(frozen=True)
class _BlockSpec:
    block_id: int
    in_channels: int
    expanded: int
    out_channels: int
    stride: int

    @property
    def prefix(self) -> str:
        return f"block_{self.block_id}_" if self.block_id else "expanded_conv_"

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _block_specs() -> tuple[_BlockSpec, ...]:
    # (expansion, output channels, stride) of blocks 0..16; alpha 1.0 keeps every count as is.
    plan = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1),
            (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1),
            (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1)]
    specs, channels = [], 32
    for block_id, (expansion, out_channels, stride) in enumerate(plan):
        specs.append(_BlockSpec(block_id, channels, channels * expansion, out_channels, stride))
        channels = out_channels
    return tuple(specs)


_BLOCKS = _block_specs()


def _batchnorm_shapes(layer: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{layer}/{part}": (channels,) for part in ("gamma", "beta", "moving_mean", "moving_variance")}


def backbone_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every MobileNetV2 weight by Keras name (``layer/weight``), with its shape."""
    shapes: dict[str, tuple[int, ...]] = {"Conv1/kernel": (3, 3, 3, 32), **_batchnorm_shapes("bn_Conv1", 32)}
    for spec in _BLOCKS:
        p = spec.prefix
        if spec.block_id:
            shapes[f"{p}expand/kernel"] = (1, 1, spec.in_channels, spec.expanded)
            shapes.update(_batchnorm_shapes(f"{p}expand_BN", spec.expanded))
        shapes[f"{p}depthwise/depthwise_kernel"] = (3, 3, spec.expanded, 1)
        shapes.update(_batchnorm_shapes(f"{p}depthwise_BN", spec.expanded))
        shapes[f"{p}project/kernel"] = (1, 1, spec.expanded, spec.out_channels)
        shapes.update(_batchnorm_shapes(f"{p}project_BN", spec.out_channels))
    shapes["Conv_1/kernel"] = (1, 1, 320, 1280)
    shapes.update(_batchnorm_shapes("Conv_1_bn", 1280))
    return shapes


#: The Sequential's layers that own weights, in order, with their weights (last name part) and shapes.
HEAD_LAYERS: tuple[tuple[str, dict[str, tuple[int, ...]]], ...] = (
    ("layer normalization after Flatten", {"gamma": (FEATURE_SIZE,), "beta": (FEATURE_SIZE,)}),
    ("LSTM(640)", {"kernel": (FEATURE_SIZE, 4 * LSTM_UNITS),
                   "recurrent_kernel": (LSTM_UNITS, 4 * LSTM_UNITS), "bias": (4 * LSTM_UNITS,)}),
    ("layer normalization after the LSTM", {"gamma": (LSTM_UNITS,), "beta": (LSTM_UNITS,)}),
    ("Dense(1, sigmoid)", {"kernel": (LSTM_UNITS, 1), "bias": (1,)}),
)


# --------------------------------------------------------------------------------------------------
# Reading the Keras 2 HDF5 file


@dataclass(frozen=True)
class _Conv:
    """A convolution with its BatchNorm folded in: y = conv(x, kernel) + bias."""

    kernel: Array       # (kh, kw, cin, cout) full / (kh, kw, c) depthwise / (cin, cout) pointwise
    bias: Array
    stride: int = 1


@dataclass(frozen=True)
class _Block:
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv
    residual: bool


@dataclass(frozen=True)
class OOBNetWeights:
    stem: _Conv
    blocks: tuple[_Block, ...]
    last_conv: _Conv
    feature_norm: tuple[Array, Array]       # gamma, beta
    lstm_kernel: Array                      # (5120, 2560), gates i, f, c, o
    lstm_recurrent_kernel: Array            # (640, 2560)
    lstm_bias: Array                        # (2560,)
    output_norm: tuple[Array, Array]
    dense_kernel: Array                     # (640, 1)
    dense_bias: Array                       # (1,)


def _missing_message(path: Path) -> str:
    return f"OOBNet weights file not found: {path}. {HOW_TO_GET_WEIGHTS}"


def _bad_file(path: Path, what: str) -> WeightsError:
    return WeightsError(f"OOBNet weights file {path} {what}. {HOW_TO_GET_WEIGHTS}", path=path)


def _decode(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _short_name(weight_name: str) -> str:
    """``mobilenetv2_1.00_64/Conv1/kernel:0`` or ``Conv1/kernel:0`` → ``Conv1/kernel``."""
    base = weight_name.rsplit(":", 1)[0] if ":" in weight_name.rsplit("/", 1)[-1] else weight_name
    return "/".join(base.split("/")[-2:])


def _layers_with_weights(path: Path, root: Any) -> list[tuple[str, dict[str, Any]]]:
    if "layer_names" not in root.attrs:
        if "layers" in root or "vars" in root or "_layer_checkpoint_dependencies" in root:
            raise _bad_file(path, "was written by Keras 3 (its layout differs from the published "
                                  "Keras 2 file); use the original file, not a re-saved copy")
        raise _bad_file(path, "is an HDF5 file but not a Keras weights file (no 'layer_names' attribute)")
    layers = []
    for raw_layer_name in root.attrs["layer_names"]:
        layer_name = _decode(raw_layer_name)
        if layer_name not in root:
            raise _bad_file(path, f"lists layer {layer_name!r} but has no data for it (damaged file?)")
        group = root[layer_name]
        weight_names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        if not weight_names:
            continue
        datasets = {}
        for weight_name in weight_names:
            if weight_name not in group:
                raise _bad_file(path, f"lists weight {weight_name!r} of layer {layer_name!r} but has no "
                                      "data for it (damaged file?)")
            datasets[_short_name(weight_name)] = group[weight_name]
        layers.append((layer_name, datasets))
    return layers


def _check_shape(path: Path, layer: str, name: str, dataset: Any, expected: tuple[int, ...]) -> None:
    if tuple(dataset.shape) != expected:
        raise _bad_file(path, f"does not match OOBNet: weight {name!r} of layer {layer!r} has shape "
                              f"{tuple(dataset.shape)}, expected {expected}")


def _read_weights(path: Path, *, load_data: bool) -> dict[str, Array]:
    """Check names and shapes; return every weight (as float32) keyed ``layer/weight`` when asked.

    Head weights are keyed ``head<i>/<weight>`` since Keras names those layers by creation order
    (``layer_normalization_3``...), which says nothing about the architecture.
    """
    if not path.exists():
        raise WeightsError(_missing_message(path), path=path)
    if not path.is_file():
        raise _bad_file(path, "is not a regular file")
    import h5py

    try:
        if not h5py.is_hdf5(path):
            size = path.stat().st_size
            raise _bad_file(path, f"is not an HDF5 file ({size} bytes, no HDF5 signature)")
        with h5py.File(path, "r") as root:
            layers = _layers_with_weights(path, root)
            if len(layers) != 1 + len(HEAD_LAYERS):
                names = ", ".join(name for name, _ in layers) or "none"
                raise _bad_file(path, f"does not match OOBNet: it has {len(layers)} layers with weights "
                                      f"({names}), expected {1 + len(HEAD_LAYERS)} (MobileNetV2, "
                                      "LayerNormalization, LSTM, LayerNormalization, Dense)")
            backbone_name, backbone = layers[0]
            expected = backbone_weight_shapes()
            missing = [name for name in expected if name not in backbone]
            if missing:
                raise _bad_file(path, f"does not match OOBNet: its first layer {backbone_name!r} is not "
                                      f"a MobileNetV2 (alpha 1.0) — {len(missing)} weights are missing, "
                                      f"e.g. {missing[0]!r}")
            for name, shape in expected.items():
                _check_shape(path, backbone_name, name, backbone[name], shape)
            weights: dict[str, Array] = {}
            if load_data:
                weights.update({name: np.asarray(backbone[name][()], dtype=np.float32) for name in expected})
            for index, ((layer_name, datasets), (role, shapes)) in enumerate(zip(layers[1:], HEAD_LAYERS, strict=True)):
                short = {name.rsplit("/", 1)[-1]: data for name, data in datasets.items()}
                if set(short) != set(shapes):
                    raise _bad_file(path, f"does not match OOBNet: layer {layer_name!r} has weights "
                                          f"{sorted(short)}, expected the {role} with {sorted(shapes)}")
                for name, shape in shapes.items():
                    _check_shape(path, layer_name, name, short[name], shape)
                    if load_data:
                        weights[f"head{index}/{name}"] = np.asarray(short[name][()], dtype=np.float32)
            return weights
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        # h5py reports a cut-off file as OSError ("truncated file", "bad object header"...).
        raise _bad_file(path, f"cannot be read; it is probably truncated or damaged ({exc})") from exc


def _fold(kernel: Array, weights: dict[str, Array], bn: str, *, depthwise: bool = False,
          stride: int = 1) -> _Conv:
    scale = weights[f"{bn}/gamma"] / np.sqrt(weights[f"{bn}/moving_variance"] + np.float32(_BATCHNORM_EPSILON))
    bias = weights[f"{bn}/beta"] - weights[f"{bn}/moving_mean"] * scale
    if depthwise:
        folded = kernel[..., 0] * scale                 # (3, 3, C)
    elif kernel.shape[:2] == (1, 1):
        folded = kernel[0, 0] * scale                   # (cin, cout) for a matrix product
    else:
        folded = kernel * scale
    return _Conv(np.ascontiguousarray(folded, dtype=np.float32), bias.astype(np.float32), stride)


def load_weights(weights_path: str | os.PathLike[str] | None = None) -> OOBNetWeights:
    """Read and check ``oobnet_weights.h5``; raises :class:`WeightsError` saying what is wrong."""
    path = resolve_weights_path(weights_path)
    w = _read_weights(path, load_data=True)
    blocks = []
    for spec in _BLOCKS:
        p = spec.prefix
        expand = _fold(w[f"{p}expand/kernel"], w, f"{p}expand_BN") if spec.block_id else None
        depthwise = _fold(w[f"{p}depthwise/depthwise_kernel"], w, f"{p}depthwise_BN", depthwise=True,
                          stride=spec.stride)
        project = _fold(w[f"{p}project/kernel"], w, f"{p}project_BN")
        blocks.append(_Block(expand, depthwise, project, spec.residual))
    return OOBNetWeights(
        stem=_fold(w["Conv1/kernel"], w, "bn_Conv1", stride=2),
        blocks=tuple(blocks),
        last_conv=_fold(w["Conv_1/kernel"], w, "Conv_1_bn"),
        feature_norm=(w["head0/gamma"], w["head0/beta"]),
        lstm_kernel=w["head1/kernel"],
        lstm_recurrent_kernel=w["head1/recurrent_kernel"],
        lstm_bias=w["head1/bias"],
        output_norm=(w["head2/gamma"], w["head2/beta"]),
        dense_kernel=w["head3/kernel"],
        dense_bias=w["head3/bias"],
    )


# --------------------------------------------------------------------------------------------------
# Forward pass


def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': the odd pixel of padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _keras_correct_pad(size: int, kernel: int = 3) -> tuple[int, int]:
    """The ZeroPadding2D Keras puts before MobileNetV2's stride-2 depthwise convs ('valid')."""
    adjust = 1 - size % 2
    return kernel // 2 - adjust, kernel // 2


def _pad(x: Array, rows: tuple[int, int], cols: tuple[int, int]) -> Array:
    if rows == (0, 0) and cols == (0, 0):
        return x
    return np.pad(x, ((0, 0), rows, cols, (0, 0)))


def _relu6(x: Array) -> Array:
    return np.clip(x, 0.0, 6.0, out=x)


def _windows(x: Array, kernel: int, stride: int, out_h: int, out_w: int) -> Iterator[tuple[int, int, Array]]:
    """Each (dy, dx) tap of a valid convolution over the already padded ``x``, as strided views."""
    for dy in range(kernel):
        for dx in range(kernel):
            yield dy, dx, x[:, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride, :]


def _stem(x: Array, conv: _Conv) -> Array:
    n, h, w, _ = x.shape
    kernel = conv.kernel.shape[0]
    rows, cols = _tf_same_padding(h, kernel, conv.stride), _tf_same_padding(w, kernel, conv.stride)
    xp = _pad(x, rows, cols)
    out_h, out_w = -(-h // conv.stride), -(-w // conv.stride)
    # im2col in (dy, dx, channel) order, the order of the flattened Keras kernel.
    patches = np.concatenate([view for _, _, view in _windows(xp, kernel, conv.stride, out_h, out_w)], axis=-1)
    out = patches.reshape(-1, patches.shape[-1]) @ conv.kernel.reshape(-1, conv.kernel.shape[-1])
    out += conv.bias
    return _relu6(out.reshape(n, out_h, out_w, -1))


def _pointwise(x: Array, conv: _Conv, *, relu6: bool) -> Array:
    n, h, w, c = x.shape
    out = x.reshape(-1, c) @ conv.kernel
    out += conv.bias
    out = out.reshape(n, h, w, -1)
    return _relu6(out) if relu6 else out


def _depthwise(x: Array, conv: _Conv) -> Array:
    _, h, w, _ = x.shape
    if conv.stride == 1:
        rows, cols = _tf_same_padding(h, 3, 1), _tf_same_padding(w, 3, 1)
    else:
        rows, cols = _keras_correct_pad(h), _keras_correct_pad(w)
    xp = _pad(x, rows, cols)
    out_h = (h + sum(rows) - 3) // conv.stride + 1
    out_w = (w + sum(cols) - 3) // conv.stride + 1
    out: Array | None = None
    for dy, dx, view in _windows(xp, 3, conv.stride, out_h, out_w):
        term = view * conv.kernel[dy, dx]
        if out is None:
            out = term
        else:
            out += term
    assert out is not None
    out += conv.bias
    return _relu6(out)


def _layer_norm(x: Array, gamma: Array, beta: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = np.mean(np.square(centred), axis=-1, keepdims=True)
    return np.asarray(centred / np.sqrt(variance + np.float32(_LAYERNORM_EPSILON)) * gamma + beta, dtype=np.float32)


def _sigmoid(x: Array) -> Array:
    # tanh form: no overflow warning for large |x|, and exact enough in float32.
    return np.asarray(np.float32(0.5) * np.tanh(np.float32(0.5) * x) + np.float32(0.5), dtype=np.float32)


def preprocess(frames: npt.NDArray[Any]) -> Array:
    """MobileNetV2's preprocessing: RGB values 0..255 → [-1, 1]."""
    x = np.asarray(frames, dtype=np.float32) / np.float32(127.5)
    x -= np.float32(1.0)
    return x


def backbone_features(weights: OOBNetWeights, frames: npt.NDArray[Any]) -> Array:
    """MobileNetV2 output, flattened: (N, 64, 64, 3) RGB 0..255 → (N, 5120)."""
    outputs = []
    for start in range(0, len(frames), _CNN_CHUNK):
        x = _stem(preprocess(frames[start:start + _CNN_CHUNK]), weights.stem)
        for block in weights.blocks:
            y = _pointwise(x, block.expand, relu6=True) if block.expand is not None else x
            y = _depthwise(y, block.depthwise)
            y = _pointwise(y, block.project, relu6=False)
            x = x + y if block.residual else y
        x = _pointwise(x, weights.last_conv, relu6=True)
        outputs.append(x.reshape(len(x), -1))
    return np.concatenate(outputs, axis=0)


def resize_like_tensorflow(frames: npt.NDArray[Any], size: tuple[int, int] = INPUT_SIZE) -> Array:
    """``tf.image.resize(frames, (h, w))`` as the original OOBNet calls it (bilinear, half-pixel
    centres, no antialiasing), for RGB frames (N, H, W, 3) or (H, W, 3); ``size`` is (width, height).

    Returns float32 values 0..255 (not rounded), which :meth:`OOBNetDetector.score` accepts as is.
    """
    array = np.asarray(frames, dtype=np.float32)
    single = array.ndim == 3
    if single:
        array = array[None]
    out_w, out_h = size

    def axis(in_size: int, out_size: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], Array]:
        scale = np.float32(in_size) / np.float32(out_size)
        centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = np.floor(centre)
        lower = np.maximum(floor, 0).astype(np.intp)
        upper = np.minimum(np.ceil(centre), in_size - 1).astype(np.intp)
        return lower, upper, (centre - floor).astype(np.float32)

    y0, y1, y_lerp = axis(array.shape[1], out_h)
    x0, x1, x_lerp = axis(array.shape[2], out_w)
    x_lerp = x_lerp[None, None, :, None]
    top = array[:, y0][:, :, x0] + (array[:, y0][:, :, x1] - array[:, y0][:, :, x0]) * x_lerp
    bottom = array[:, y1][:, :, x0] + (array[:, y1][:, :, x1] - array[:, y1][:, :, x0]) * x_lerp
    out = top + (bottom - top) * y_lerp[None, :, None, None]
    return out[0] if single else out


class OOBNetDetector:
    """The OOBNet detector; keeps the LSTM state between :meth:`score` calls until :meth:`reset`."""

    name = "oobnet"
    input_size = INPUT_SIZE
    stateful = True
    threshold = 0.5

    def __init__(self, weights_path: str | os.PathLike[str] | None = None) -> None:
        self.weights_path = resolve_weights_path(weights_path)
        self.weights = load_weights(self.weights_path)
        self._hidden = np.zeros(LSTM_UNITS, dtype=np.float32)
        self._cell = np.zeros(LSTM_UNITS, dtype=np.float32)

    def reset(self) -> None:
        self._hidden = np.zeros(LSTM_UNITS, dtype=np.float32)
        self._cell = np.zeros(LSTM_UNITS, dtype=np.float32)

    @property
    def state(self) -> tuple[Array, Array]:
        """Copies of the LSTM (hidden, cell) state."""
        return self._hidden.copy(), self._cell.copy()

    def shrink(self, frames: npt.NDArray[Any]) -> Array:
        """Full-size RGB frames → 64×64 as the original OOBNet resized them (``tf.image.resize``)."""
        return resize_like_tensorflow(frames, self.input_size)

    def score(self, frames: FrameBatch) -> Scores:
        """Probability of out-of-body per frame.

        ``frames`` is (N, 64, 64, 3) RGB, uint8 or float 0..255 (see :func:`resize_like_tensorflow`).
        """
        frames = np.asarray(frames)
        width, height = self.input_size
        if frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
            raise ValueError(f"OOBNet needs frames shaped (N, {height}, {width}, 3), got {frames.shape}")
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        w = self.weights
        features = _layer_norm(backbone_features(w, frames), *w.feature_norm)
        # The input projection of every time step at once; only h @ U is sequential.
        projected = features @ w.lstm_kernel + w.lstm_bias
        hidden, cell = self._hidden, self._cell
        outputs = np.empty((len(frames), LSTM_UNITS), dtype=np.float32)
        units = LSTM_UNITS
        for t in range(len(frames)):
            gates = projected[t] + hidden @ w.lstm_recurrent_kernel
            input_gate = _sigmoid(gates[:units])
            forget_gate = _sigmoid(gates[units:2 * units])
            candidate = np.tanh(gates[2 * units:3 * units])
            output_gate = _sigmoid(gates[3 * units:])
            cell = forget_gate * cell + input_gate * candidate
            hidden = output_gate * np.tanh(cell)
            outputs[t] = hidden
        self._hidden, self._cell = hidden, cell
        logits = _layer_norm(outputs, *w.output_norm) @ w.dense_kernel + w.dense_bias
        return _sigmoid(logits[:, 0]).astype(np.float32)
