"""Synthetic endoscope frames for tests, the demo sample case and training the built-in detector.

Two generators draw plausible, obviously fake pictures with numpy alone:

* :func:`inbody_frame` — reddish/pink tissue with yellow fat, vessels and specular highlights,
  lit from the scope tip (light falls off towards the rim), seen through a circular or octagonal
  field stop with a black surround;
* :func:`oob_frame` — an operating-room scene: blue/green drapes, grey/white walls and table, a
  surgical lamp, a gowned person-like figure and text-like strokes, sometimes seen through the
  field stop too (as when the scope lies on the table still recording).

The scene layout is drawn from ``rng``; ``t`` (seconds) only moves it.  So a clip whose frames all
come from generators seeded alike (``np.random.default_rng(seed)`` per frame) shows one scene
moving slowly, and the same (seed, t) always gives the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
_Float = npt.NDArray[np.float32]
#: A coordinate: a Python float, or a float32 computed from the arrays.
_Coordinate = float | np.floating[Any]


def _check_size(width: int, height: int) -> None:
    if width < 16 or height < 16:
        raise ValueError(f"synthetic frames need at least 16x16 pixels, got {width}x{height}")


def _grid(width: int, height: int) -> tuple[_Float, _Float]:
    """Pixel centres in units of the frame height, origin at the centre (aspect-independent shapes)."""
    scale = np.float32(1.0 / height)
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2) * scale
    ys = (np.arange(height, dtype=np.float32) - (height - 1) / 2) * scale
    return xs[None, :], ys[:, None]


def _waves(rng: np.random.Generator, x: _Float, y: _Float, t: float, count: int,
           freq: tuple[float, float], speed: float) -> _Float:
    """A smooth random field in [-1, 1]: a few plane waves drifting with t."""
    field = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for _ in range(count):
        angle = rng.uniform(0, 2 * np.pi)
        k = rng.uniform(*freq) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi) + speed * t * rng.uniform(0.5, 1.5)
        field += np.sin(np.float32(k * np.cos(angle)) * x + np.float32(k * np.sin(angle)) * y
                        + np.float32(phase))
    return field / np.float32(count ** 0.5 * 1.2)


def _field_stop(rng: np.random.Generator, x: _Float, y: _Float, aspect: float) -> tuple[_Float, float]:
    """Mask of the scope's circular or octagonal opening (1 inside, soft edge) and its radius."""
    radius = float(rng.uniform(0.47, 0.62)) if aspect > 1.2 else float(rng.uniform(0.40, 0.52))
    cx, cy = rng.normal(0, 0.015, size=2)
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    if rng.random() < 0.3:
        # Octagon: the largest of the axis and diagonal distances.
        dist = np.maximum(np.maximum(np.abs(dx), np.abs(dy)),
                          (np.abs(dx) + np.abs(dy)) / np.float32(np.sqrt(2) * 0.93))
    else:
        dist = np.sqrt(dx * dx + dy * dy)
    edge = np.float32(0.012)
    return np.clip((np.float32(radius) - dist) / edge, 0, 1).astype(np.float32), radius


def _blob(x: _Float, y: _Float, cx: float, cy: float, rx: float, ry: float) -> _Float:
    return np.clip(1 - ((x - np.float32(cx)) / np.float32(rx)) ** 2
                   - ((y - np.float32(cy)) / np.float32(ry)) ** 2, 0, 1)


def _to_uint8(img: _Float) -> Image:
    return np.clip(img, 0, 255).astype(np.uint8)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> _Float:
    return rng.normal(0, sigma, size=(*shape, 1)).astype(np.float32)


def inbody_frame(rng: np.random.Generator, width: int, height: int, t: float) -> Image:
    """An (height, width, 3) RGB picture of tissue seen through an endoscope."""
    _check_size(width, height)
    x, y = _grid(width, height)
    aspect = width / height
    drift_x, drift_y = (np.float32(v) for v in rng.normal(0, 0.02, size=2) * t)
    xm, ym = x + drift_x, y + drift_y

    tissue = np.array(rng.choice([[205, 80, 75], [190, 90, 95], [210, 105, 95], [170, 55, 50]]),
                      dtype=np.float32) * np.float32(rng.uniform(0.85, 1.1))
    fat = np.array([225, 180, 95], dtype=np.float32) * np.float32(rng.uniform(0.8, 1.05))
    blood = np.array([120, 15, 20], dtype=np.float32)

    shading = _waves(rng, xm, ym, t, 5, (0.6, 2.5), 0.15)
    fat_mask = np.clip((_waves(rng, xm, ym, t, 3, (0.5, 1.6), 0.1) - rng.uniform(0.1, 0.6)) * 4, 0, 1)
    vessels = np.abs(_waves(rng, xm, ym, t, 3, (2.0, 5.0), 0.1))
    vessel_mask = np.clip((0.08 - vessels) * 12, 0, 1) * np.float32(rng.uniform(0.3, 0.8))

    img = tissue * (1 - fat_mask[..., None]) + fat * fat_mask[..., None]
    img = img * (1 - vessel_mask[..., None]) + blood * vessel_mask[..., None]
    img = img * (1 + np.float32(0.25) * shading[..., None])

    if rng.random() < 0.4:
        # A metal instrument shaft entering from the rim, as in most laparoscopic views.
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
        along = x * direction[0] + y * direction[1]
        across = np.abs(-x * direction[1] + y * direction[0] - np.float32(rng.normal(0, 0.05)))
        shaft = np.clip((np.float32(0.05) - across) * 60, 0, 1) * (along > rng.uniform(0.0, 0.25))
        metal = np.float32(rng.uniform(90, 160)) * (1 + 0.3 * np.clip(1 - across / 0.05, 0, 1))
        img = img * (1 - shaft[..., None]) + metal[..., None] * shaft[..., None] * np.float32(0.95)

    # The light source sits at the tip: centre bright, rim dark.
    r2 = x * x + y * y
    falloff = np.exp(-r2 / np.float32(rng.uniform(0.18, 0.35)))
    img = img * (np.float32(0.35) + np.float32(0.85) * falloff)[..., None]

    highlights = np.zeros_like(r2)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(-0.45, 0.45), rng.uniform(-0.4, 0.4)
        highlights = np.maximum(highlights, _blob(xm, ym, cx, cy, rng.uniform(0.005, 0.03),
                                                  rng.uniform(0.005, 0.02)))
    img = img + np.float32(300) * np.clip(highlights * 3, 0, 1)[..., None]

    stop, _ = _field_stop(rng, x, y, aspect)
    img = img * stop[..., None] + _sensor_noise(rng, (height, width), 2.5) + np.float32(3)
    return _to_uint8(img)


def _fill_box(img: _Float, x0: _Coordinate, y0: _Coordinate, x1: _Coordinate, y1: _Coordinate, colour: npt.ArrayLike,
              opacity: float = 1.0) -> None:
    """Paint an axis-aligned box given in centred height units, in place, by slicing (fast)."""
    height, width = img.shape[:2]
    cols = slice(max(0, round(x0 * height + width / 2)), max(0, round(x1 * height + width / 2)))
    rows = slice(max(0, round(y0 * height + height / 2)), max(0, round(y1 * height + height / 2)))
    region = img[rows, cols]
    region *= np.float32(1 - opacity)
    region += np.asarray(colour, dtype=np.float32) * np.float32(opacity)


def _paint(img: _Float, mask: _Float, colour: npt.ArrayLike) -> _Float:
    colour_arr = np.asarray(colour, dtype=np.float32)
    m = mask[..., None] if mask.ndim == 2 else mask
    return img * (1 - m) + colour_arr * m


def oob_frame(rng: np.random.Generator, width: int, height: int, t: float) -> Image:
    """An (height, width, 3) RGB picture of an operating room, as a scope held outside sees it."""
    _check_size(width, height)
    x0, y0 = _grid(width, height)
    aspect = width / height
    pan_x, pan_y = (np.float32(v) for v in rng.normal(0, 0.03, size=2) * t)
    x, y = x0 + pan_x, y0 + pan_y
    half_w = aspect / 2

    wall_tone = rng.uniform(150, 235)
    wall_tint = rng.choice([[1.0, 1.0, 1.0], [0.95, 1.0, 1.02], [1.0, 0.98, 0.93], [0.9, 0.97, 1.0]])
    gradient = 1 + np.float32(0.15) * _waves(rng, x, y, t, 2, (0.2, 0.7), 0.05)
    img = np.ones((height, width, 3), dtype=np.float32) * (np.float32(wall_tone) * gradient)[..., None]
    img = img * np.asarray(wall_tint, dtype=np.float32)

    # Ceiling panels / cabinet edges: straight light and dark lines.
    line_half = 1.0 / height
    for _ in range(int(rng.integers(2, 6))):
        grey = [rng.uniform(40, 110)] * 3
        if rng.random() < 0.5:
            pos = rng.uniform(-half_w, half_w) - pan_x
            _fill_box(img, pos - line_half, -1.0, pos + line_half, 1.0, grey, opacity=0.7)
        else:
            pos = rng.uniform(-0.5, 0.5) - pan_y
            _fill_box(img, -aspect, pos - line_half, aspect, pos + line_half, grey, opacity=0.7)

    drape_colour = rng.choice([[40, 110, 170], [50, 140, 150], [45, 130, 95], [70, 150, 190],
                               [30, 90, 140]]).astype(np.float32)
    drape_top = rng.uniform(-0.1, 0.3)
    tilt = rng.uniform(-0.3, 0.3)
    folds = 1 + np.float32(0.18) * _waves(rng, x, y, t, 4, (2.0, 6.0), 0.2)
    drape = np.clip((y - np.float32(drape_top) - np.float32(tilt) * x) * height / 2, 0, 1)
    img = img * (1 - drape[..., None]) + (drape_colour * folds[..., None]) * drape[..., None]

    # A white/grey table or instrument trolley.
    tx = rng.uniform(-half_w, half_w * 0.4)
    table_top, table_width = rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.7)
    _fill_box(img, tx - pan_x, table_top - pan_y, tx + table_width - pan_x, 0.6,
              [rng.uniform(185, 240)] * 3)

    # A gowned figure: head with cap or skin, then a trapezoid torso.
    px = rng.uniform(-half_w * 0.7, half_w * 0.7) + 0.02 * np.sin(t * 0.7)
    py = rng.uniform(-0.3, -0.05)
    gown = rng.choice([[60, 110, 170], [70, 140, 120], [40, 80, 140], [90, 130, 180]])
    width_at = np.float32(0.08) + np.float32(0.25) * np.clip(y - np.float32(py), 0, None)
    torso = ((np.abs(x - np.float32(px)) < width_at) & (y > py + 0.07)).astype(np.float32)
    img = _paint(img, torso, gown)
    head = np.clip(_blob(x, y, px, py, 0.055, 0.07) * 8, 0, 1)
    img = _paint(img, head, rng.choice([[225, 180, 150], [190, 140, 110], [120, 85, 65]]))
    cap = head * (y < py - 0.01)
    img = _paint(img, cap, gown if rng.random() < 0.6 else [240, 240, 240])

    # The surgical lamp: a blown-out disc with a halo.
    lx, ly = rng.uniform(-half_w * 0.8, half_w * 0.8), rng.uniform(-0.45, -0.15)
    lr = rng.uniform(0.05, 0.12)
    d2 = ((x - np.float32(lx)) ** 2 + (y - np.float32(ly)) ** 2) / np.float32(lr * lr)
    img = np.asarray(img + np.float32(220) * np.exp(-d2 / 2)[..., None], dtype=np.float32)
    img = _paint(img, (d2 < 1).astype(np.float32), [255, 255, 250])

    # Text-like strokes: rows of short bars (a monitor, a label, an on-screen menu).
    bx, by = rng.uniform(-half_w * 0.9, half_w * 0.3), rng.uniform(-0.45, 0.2)
    light_text = rng.random() < 0.5
    _fill_box(img, bx - 0.02, by - 0.03, bx + 0.42, by + 0.2,
              [30, 40, 60] if light_text else [235, 235, 235], opacity=0.85)
    stroke_colour = [230, 230, 230] if light_text else [20, 20, 20]
    for row in range(4):
        cursor = bx
        for _ in range(int(rng.integers(3, 7))):
            glyphs = rng.uniform(0.02, 0.08)
            _fill_box(img, cursor, by + row * 0.045, cursor + glyphs, by + row * 0.045 + 0.018,
                      stroke_colour)
            cursor += glyphs + 0.015
            if cursor > bx + 0.4:
                break

    r2 = x0 * x0 + y0 * y0
    img = img * (np.float32(0.75) + np.float32(0.3) * np.exp(-r2 / np.float32(0.5)))[..., None]
    img = img * np.float32(rng.uniform(0.7, 1.15))
    if rng.random() < 0.5:
        stop, _ = _field_stop(rng, x0, y0, aspect)
        img = img * stop[..., None]
    img = img + _sensor_noise(rng, (height, width), 2.5) + np.float32(3)
    return _to_uint8(img)
