"""Training material for the learned out-of-body detector (training-only: Pillow, numpy, PyAV).

* :func:`read_rows` reads the development table, says which rows may shape shipped weights (MIT,
  Apache-2.0 and CC BY 4.0 rows only) and which source (video or patient) each frame belongs to, so
  that cross-validation never splits a source.
* :func:`augment` turns one picture into what another recorder could have delivered: other aspect
  ratios (stretched, letter- or pillar-boxed), zoomed views without a field stop, a circular or
  octagonal field stop where there was none, colour casts, brightness, blur, compression and
  recorder overlay text; :func:`recorder_screen` sets a picture into a recorder's screen (dark bands of
  status text, opaque info panels, icons) and :func:`glare` blows out the light of a close-up, for
  in-body and out-of-body pictures alike.
* :func:`generated_scene` paints hard out-of-body pictures the development set lacks: drapes, gloves,
  ceiling lights, monitors, whiteboards, masked faces, no-signal screens and colour bars.

Everything is drawn from a seeded ``numpy.random.Generator``: the same seed gives the same pictures.
"""

from __future__ import annotations

import csv
import io
import re
import string
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from endoshare.synthetic import inbody_frame, oob_frame

#: Labels whose frames must be redacted: seen outside the patient, not an endoscope picture, or no picture.
POSITIVE_LABELS = frozenset({"oob", "not_endoscope", "oob_or_scene", "blank_nosignal", "blank_black"})
#: Labels of frames inside the patient (with or without overlays drawn on them).
NEGATIVE_LABELS = frozenset({"inbody", "overlay_inbody", "inbody_annotated", "inbody_sinus"})
#: Licences whose rows may train shipped weights (see ../shared/data/README.md).
TRAINABLE_LICENCES = ("MIT", "Apache-2.0", "CC BY 4.0")


@dataclass(frozen=True)
class Row:
    path: Path
    label: str
    source: str          # the video or patient: the unit of cross-validation
    licence: str
    target: int | None   # 1 out of body, 0 in body, None: no single right answer (not trained, not scored)

    @property
    def trainable(self) -> bool:
        return self.target is not None and self.licence.startswith(TRAINABLE_LICENCES)


def source_of(file_name: str, repo: str) -> str:
    """The recording a frame comes from: the video id or patient id where the file name carries one."""
    name = Path(file_name).name
    if match := re.match(r"yousskad__(\d+)_", name):
        return f"yousskad/{match.group(1)}"
    if match := re.match(r"egoodman92__laparoscopic-dataset__(\d+)-", name):
        return f"egoodman92/{match.group(1)}"
    return repo


def read_rows(table: Path) -> list[Row]:
    rows = []
    with table.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle, delimiter="\t"):
            label = record["label"]
            target = 1 if label in POSITIVE_LABELS else 0 if label in NEGATIVE_LABELS else None
            rows.append(Row(path=table.parent / record["file"], label=label,
                            source=source_of(record["file"], record["source_repo"]),
                            licence=record["license"], target=target))
    return rows


def load_picture(row: Row) -> Image.Image:
    """The frame as the recorder showed it (the yousskad export stretched 16:9 frames to 640x640), at most 640 wide."""
    image = Image.open(row.path).convert("RGB")
    width, height = image.size
    if row.source.startswith("yousskad/") and width == height:
        height = width * 9 // 16
    # The model sees a 128-pixel square: 640 pixels wide keeps every detail it can use and makes
    # augmenting ten thousand views cheap.
    scale = min(1.0, 640 / width)
    return image.resize((max(16, round(width * scale)), max(16, round(height * scale))), Image.Resampling.BILINEAR)


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """Squash the whole frame to size x size with swscale's bilinear scaler, as the video path does."""
    frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
    yuv = frame.reformat(format="yuv420p")  # recorders deliver YUV 4:2:0: chroma is shared by 2x2 pixels
    return yuv.to_ndarray(width=size, height=size, format="rgb24", interpolation="BILINEAR")


# --------------------------------------------------------------------------------------------------
# Augmentation

_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _FONT_FILES[int(rng.integers(len(_FONT_FILES)))]
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return ImageFont.load_default(size)


def _random_text(rng: np.random.Generator, length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits + "  :/.-"
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=length))


def recorder_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Burn a few lines of recorder text (name, date, settings) into a corner or along an edge."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    size = max(8, int(height * rng.uniform(0.025, 0.05)))
    font = _font(rng, size)
    colour = tuple(int(c) for c in rng.choice([[255, 255, 255], [255, 255, 0], [0, 255, 0], [200, 200, 200]]))
    lines = int(rng.integers(1, 5))
    x = int(rng.choice([width * 0.02, width * rng.uniform(0.55, 0.75)]))
    y = int(rng.choice([height * 0.02, height * rng.uniform(0.7, 0.85)]))
    for line in range(lines):
        draw.text((x, y + line * size * 1.3), _random_text(rng, int(rng.integers(6, 22))), fill=colour, font=font)
    return image


def recorder_screen(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture as a recorder's screen capture shows it: set into a dark frame with side bands of
    status text, an opaque coloured panel (a picture-in-picture or an info box) in a corner, and a few
    small icons.  Applied to both classes alike, so that the head learns these are not a room."""
    width, height = image.size
    canvas = image.copy()
    if rng.random() < 0.6:
        # The picture shrunk into a dark screen, with bands left and right (or above and below) for text.
        share = rng.uniform(0.65, 0.9)
        inner = image.resize((max(16, int(width * share)), max(16, int(height * rng.uniform(share, 0.97)))),
                             Image.Resampling.BILINEAR)
        shade = int(rng.integers(0, 40))
        canvas = Image.new("RGB", (width, height), (shade, shade, shade + int(rng.integers(0, 15))))
        canvas.paste(inner, (int(rng.integers(0, width - inner.size[0] + 1)),
                             int(rng.integers(0, height - inner.size[1] + 1))))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 3))):
        # An opaque panel: 3-15 % of the screen, flat colour, optional border and text inside.
        pw, ph = int(width * rng.uniform(0.15, 0.4)), int(height * rng.uniform(0.12, 0.35))
        x = int(rng.choice([rng.uniform(0, 0.05), rng.uniform(0.55, 1.0)]) * (width - pw))
        y = int(rng.choice([rng.uniform(0, 0.05), rng.uniform(0.6, 1.0)]) * (height - ph))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.rectangle((x, y, x + pw, y + ph), fill=fill,
                       outline=tuple(int(c) for c in rng.integers(0, 256, size=3)) if rng.random() < 0.4 else None)
        font = _font(rng, max(8, int(ph * rng.uniform(0.08, 0.16))))
        for line in range(int(rng.integers(0, 4))):
            draw.text((x + 4, y + 3 + line * ph * 0.2), _random_text(rng, int(rng.integers(4, 14))),
                      fill=(255, 255, 255) if sum(fill) < 380 else (0, 0, 0), font=font)
    for _ in range(int(rng.integers(0, 4))):
        # Small icons: a ring, a square, a logo-like blob.
        r = height * rng.uniform(0.015, 0.04)
        cx, cy = rng.uniform(0.03, 0.97) * width, rng.uniform(0.03, 0.97) * height
        colour = tuple(int(c) for c in rng.choice([[255, 255, 255], [0, 200, 0], [255, 255, 0], [200, 200, 200]]))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(1, int(r / 4)))
        else:
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return recorder_overlay(canvas, rng) if rng.random() < 0.8 else canvas


def _field_stop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    radius = height * rng.uniform(0.42, 0.62)
    cx, cy = width / 2 + rng.normal(0, width * 0.02), height / 2 + rng.normal(0, height * 0.02)
    if rng.random() < 0.3:
        draw.regular_polygon((cx, cy, radius), 8, rotation=22.5, fill=255)
    else:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    black = Image.new("RGB", image.size, (0, 0, 0))
    return Image.composite(image, black, mask.filter(ImageFilter.GaussianBlur(2)))


def _change_aspect(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    target = float(rng.choice([16 / 9, 4 / 3, 5 / 4, 2.0, 16 / 10], p=[0.4, 0.3, 0.1, 0.1, 0.1]))
    how = rng.choice(["stretch", "box", "crop"])
    if how == "stretch":
        return image.resize((round(height * target), height), Image.Resampling.BILINEAR)
    current = width / height
    if how == "crop":
        if current > target:
            new_width = round(height * target)
            left = int(rng.integers(0, width - new_width + 1))
            return image.crop((left, 0, left + new_width, height))
        new_height = round(width / target)
        top = int(rng.integers(0, height - new_height + 1))
        return image.crop((0, top, width, top + new_height))
    # Letter- or pillar-box: the picture centred on black, as a recorder fitting another format does.
    if current > target:
        canvas = Image.new("RGB", (width, round(width / target)), (0, 0, 0))
    else:
        canvas = Image.new("RGB", (round(height * target), height), (0, 0, 0))
    canvas.paste(image, ((canvas.size[0] - width) // 2, (canvas.size[1] - height) // 2))
    return canvas


def _zoom(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A zoomed view: the central part of the picture, with no field stop left in it."""
    width, height = image.size
    share = rng.uniform(0.45, 0.8)
    crop_w, crop_h = int(width * share), int(height * share)
    left = int(width / 2 - crop_w / 2 + rng.uniform(-0.15, 0.15) * crop_w)
    top = int(height / 2 - crop_h / 2 + rng.uniform(-0.15, 0.15) * crop_h)
    left, top = min(max(0, left), width - crop_w), min(max(0, top), height - crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BILINEAR)


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) / 255
    pixels = pixels ** rng.uniform(0.8, 1.25)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * rng.uniform(0.7, 1.3)
    pixels = pixels * rng.uniform(0.88, 1.12, size=3) * rng.uniform(0.55, 1.3)
    return Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8))


def _compress(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(20, 90)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def low_resolution(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture as a low-resolution camera or a defocused scope gives it: 40-160 pixels wide, scaled back up."""
    width, height = image.size
    small_width = int(rng.integers(40, 161))
    small = image.resize((small_width, max(8, round(height * small_width / width))), Image.Resampling.BILINEAR)
    return small.resize((width, height), Image.Resampling.BILINEAR)


def glare(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Light blown out by the scope's own lamp: a close-up overexposed as a whole, one to three large soft
    white patches (wet tissue or a metal instrument reflecting the lamp) and small specular highlights.
    Applied to in-body and out-of-body pictures alike (``train_detector.build_glare_views``): a frame that is
    mostly white glare is no evidence either way, the rest of the picture decides."""
    width, height = image.size
    pixels = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.4:
        pixels = pixels * rng.uniform(1.3, 2.3)
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        rx, ry = rng.uniform(0.04, 0.3) * width, rng.uniform(0.04, 0.35) * height
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.integers(200, 256)))
    layer = np.asarray(mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.02, 0.08) * width))),
                       dtype=np.float32) / 255
    spots = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(spots)
    for _ in range(int(rng.integers(0, 30))):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.003, 0.015) * width
        draw.ellipse((cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r), fill=255)
    layer = np.maximum(layer, np.asarray(spots.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32) / 255)
    # Glare lies on the picture, never on the black around a field stop or in a letter box.
    lit = Image.fromarray(((pixels.max(axis=2) > 24) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    layer = layer * np.asarray(lit, dtype=np.float32) / 255
    tint = np.asarray(rng.choice([[255, 255, 255], [255, 250, 235], [245, 255, 250], [255, 245, 220]]),
                      dtype=np.float32)
    pixels = pixels * (1 - layer[..., None]) + tint * layer[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def augment(image: Image.Image, rng: np.random.Generator, blurred: bool = False) -> Image.Image:
    """One plausible recorder rendition of ``image`` (each change drawn independently); ``blurred``: at low
    resolution too (OR cameras, a scope out of focus outside the body)."""
    if blurred:
        image = low_resolution(image, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.35:
        image = _zoom(image, rng)
    if rng.random() < 0.4:
        image = _change_aspect(image, rng)
    if rng.random() < 0.2:
        image = _field_stop(image, rng)
    image = _colour(image, rng)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
    if rng.random() < 0.3:
        image = recorder_overlay(image, rng)
    if rng.random() < 0.5:
        image = _compress(image, rng)
    return image


# --------------------------------------------------------------------------------------------------
# Generated out-of-body scenes

_SIZE = (640, 360)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], scale: int) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (height, width)."""
    width, height = size
    coarse = rng.random((max(2, height // scale), max(2, width // scale))).astype(np.float32)
    field = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255
    return field


def _shade(colour: np.ndarray, shading: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(colour[None, None, :] * shading[..., None], 0, 255).astype(np.uint8))


def _drape(rng: np.random.Generator) -> Image.Image:
    colour = rng.choice([[40, 110, 170], [50, 140, 150], [45, 130, 95], [70, 150, 190], [30, 90, 140],
                         [110, 160, 200], [60, 70, 120]]).astype(np.float32)
    shading = 0.55 + 0.7 * _smooth_noise(rng, _SIZE, int(rng.integers(20, 120)))
    image = _shade(colour, shading)
    if rng.random() < 0.4:
        # A fenestration: skin painted with iodine seen through the opening of the drape.
        draw = ImageDraw.Draw(image)
        x, y = rng.uniform(100, 500), rng.uniform(60, 280)
        w, h = rng.uniform(60, 220), rng.uniform(40, 140)
        skin = tuple(int(c) for c in rng.choice([[200, 140, 90], [170, 100, 60], [225, 180, 150], [140, 90, 60]]))
        draw.ellipse((x, y, x + w, y + h), fill=skin)
    return image


def _glove(rng: np.random.Generator) -> Image.Image:
    image = _drape(rng) if rng.random() < 0.5 else _ceiling(rng)
    colour = rng.choice([[235, 225, 200], [215, 190, 150], [90, 120, 210], [140, 110, 190], [240, 240, 240],
                         [200, 170, 120]]).astype(np.float32)
    mask = Image.new("L", _SIZE, 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(150, 490), rng.uniform(120, 300)
    palm = rng.uniform(90, 200)
    draw.ellipse((cx - palm, cy - palm * 0.8, cx + palm, cy + palm * 1.2), fill=255)
    for _finger in range(int(rng.integers(2, 6))):
        angle = -np.pi / 2 + rng.uniform(-0.9, 0.9)
        length = palm * rng.uniform(1.0, 1.8)
        tip = (cx + np.cos(angle) * length, cy + np.sin(angle) * length)
        draw.line((cx, cy, *tip), fill=255, width=int(palm * rng.uniform(0.25, 0.4)))
    shading = 0.6 + 0.55 * _smooth_noise(rng, _SIZE, 60)
    glove = _shade(colour, shading)
    return Image.composite(glove, image, mask.filter(ImageFilter.GaussianBlur(3)))


def _ceiling(rng: np.random.Generator) -> Image.Image:
    tone = rng.uniform(120, 235)
    shading = 0.75 + 0.35 * _smooth_noise(rng, _SIZE, 150)
    image = _shade(np.array([tone, tone * rng.uniform(0.95, 1.02), tone * rng.uniform(0.93, 1.05)]), shading)
    draw = ImageDraw.Draw(image)
    step = rng.uniform(50, 160)
    offset = rng.uniform(0, step)
    grey = int(tone * 0.6)
    for i in range(12):
        draw.line((offset + i * step, 0, offset + i * step + rng.uniform(-40, 40), 360), fill=(grey,) * 3, width=2)
        draw.line((0, offset + i * step * 0.6, 640, offset + i * step * 0.6 + rng.uniform(-30, 30)),
                  fill=(grey,) * 3, width=2)
    for _ in range(int(rng.integers(1, 4))):
        x, y, r = rng.uniform(0, 640), rng.uniform(0, 360), rng.uniform(20, 90)
        for glow in range(6, 0, -1):
            level = int(min(255, tone + (255 - tone) * (7 - glow) / 6))
            draw.ellipse((x - r * glow / 3, y - r * glow / 3, x + r * glow / 3, y + r * glow / 3), fill=(level,) * 3)
        draw.ellipse((x - r / 3, y - r / 3, x + r / 3, y + r / 3), fill=(255, 255, 250))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))


def _monitor(rng: np.random.Generator) -> Image.Image:
    image = _ceiling(rng) if rng.random() < 0.5 else _drape(rng)
    draw = ImageDraw.Draw(image)
    kind = rng.choice(["ui", "endoscope", "vitals"])
    # A monitor showing the endoscope picture is out of body only through the room around it: keep the
    # room in view (a full-frame picture with a dark border is what a letter-boxed recording looks like).
    large = kind != "endoscope"
    x0 = rng.uniform(-40, 250) if large else rng.uniform(20, 300)
    y0 = rng.uniform(-40, 140) if large else rng.uniform(20, 150)
    x1 = x0 + (rng.uniform(250, 600) if large else rng.uniform(150, 320))
    y1 = y0 + (rng.uniform(160, 340) if large else rng.uniform(100, 190))
    draw.rectangle((x0, y0, x1, y1), fill=(20, 20, 22))
    inset = rng.uniform(8, 20)
    screen = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
    if kind == "endoscope":
        # A monitor showing the endoscope picture is still the room: the frame around it gives it away.
        w, h = int(screen[2] - screen[0]), int(screen[3] - screen[1])
        if w > 16 and h > 16:
            picture = inbody_frame(rng, w, h, 0.0)
            image.paste(Image.fromarray(picture), (int(screen[0]), int(screen[1])))
    else:
        background = (10, 20, 40) if kind == "vitals" else tuple(int(c) for c in rng.integers(20, 240, size=3))
        draw.rectangle(screen, fill=background)
        font = _font(rng, int(rng.integers(10, 24)))
        for line in range(int(rng.integers(3, 10))):
            colour = tuple(int(c) for c in rng.choice([[0, 255, 0], [255, 255, 0], [0, 200, 255], [255, 255, 255],
                                                       [20, 20, 20]]))
            ty = screen[1] + 6 + line * 24
            if ty > screen[3] - 12:
                break
            if kind == "vitals" and rng.random() < 0.5:
                xs = np.linspace(screen[0] + 5, screen[2] - 5, 60)
                ys = ty + 8 + 8 * np.sin(xs / rng.uniform(5, 20)) * (rng.random(60) > 0.7)
                draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
            else:
                draw.text((screen[0] + 8, ty), _random_text(rng, int(rng.integers(5, 25))), fill=colour, font=font)
    return image


def _whiteboard(rng: np.random.Generator) -> Image.Image:
    tone = rng.uniform(200, 250)
    image = _shade(np.array([tone, tone, tone * rng.uniform(0.95, 1.0)]),
                   0.85 + 0.2 * _smooth_noise(rng, _SIZE, 200))
    draw = ImageDraw.Draw(image)
    font = _font(rng, int(rng.integers(14, 36)))
    for line in range(int(rng.integers(3, 9))):
        colour = tuple(int(c) for c in rng.choice([[20, 20, 20], [200, 30, 30], [30, 60, 200], [30, 140, 60]]))
        draw.text((rng.uniform(10, 200), 15 + line * rng.uniform(30, 45)), _random_text(rng, int(rng.integers(4, 18))),
                  fill=colour, font=font)
    return image


def _masked_face(rng: np.random.Generator) -> Image.Image:
    image = _ceiling(rng)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy, r = rng.uniform(100, 540), rng.uniform(100, 260), rng.uniform(60, 160)
        gown = tuple(int(c) for c in rng.choice([[60, 110, 170], [70, 140, 120], [40, 80, 140], [90, 130, 180]]))
        draw.rectangle((cx - r * 1.3, cy + r * 0.9, cx + r * 1.3, 400), fill=gown)
        skin = tuple(int(c) for c in rng.choice([[225, 180, 150], [190, 140, 110], [120, 85, 65], [240, 200, 170]]))
        draw.ellipse((cx - r * 0.75, cy - r, cx + r * 0.75, cy + r), fill=skin)
        cap = gown if rng.random() < 0.6 else (240, 240, 240)
        draw.chord((cx - r * 0.8, cy - r * 1.1, cx + r * 0.8, cy + r * 0.2), 180, 360, fill=cap)
        draw.rectangle((cx - r * 0.7, cy + r * 0.05, cx + r * 0.7, cy + r * 0.75),
                       fill=tuple(int(c) for c in rng.choice([[120, 170, 220], [230, 230, 230], [90, 150, 200]])))
        for side in (-1, 1):
            draw.ellipse((cx + side * r * 0.35 - r * 0.1, cy - r * 0.3, cx + side * r * 0.35 + r * 0.1,
                          cy - r * 0.18), fill=(30, 25, 20))
    return image


def _no_signal(rng: np.random.Generator) -> Image.Image:
    kind = rng.choice(["plain", "bars"])
    if kind == "bars":
        image = Image.new("RGB", _SIZE)
        draw = ImageDraw.Draw(image)
        colours = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]
        for i, colour in enumerate(colours):
            draw.rectangle((i * 640 / 7, 0, (i + 1) * 640 / 7, 360), fill=colour)
        return image
    colour = tuple(int(c) for c in rng.choice([[0, 0, 0], [0, 0, 170], [30, 60, 160], [40, 40, 40], [90, 90, 90]]))
    image = Image.new("RGB", _SIZE, colour)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.8:
        draw.text((rng.uniform(150, 400), rng.uniform(120, 240)), rng.choice(["NO SIGNAL", "No Signal", "NO INPUT",
                                                                              "STANDBY", _random_text(rng, 8)]),
                  fill=(255, 255, 255), font=_font(rng, int(rng.integers(16, 40))))
    return image


SCENES = {"drape": _drape, "glove": _glove, "ceiling": _ceiling, "monitor": _monitor, "whiteboard": _whiteboard,
          "masked_face": _masked_face, "no_signal": _no_signal,
          "room": lambda rng: Image.fromarray(oob_frame(rng, *_SIZE, float(rng.uniform(0, 10))))}


def generated_scene(rng: np.random.Generator) -> tuple[str, Image.Image]:
    """One generated out-of-body picture and the name of its kind."""
    name = str(rng.choice(sorted(SCENES)))
    return name, SCENES[name](rng)


def generated_inbody(rng: np.random.Generator) -> Image.Image:
    """A synthetic in-body picture (the generator the demo and the tests use)."""
    return Image.fromarray(inbody_frame(rng, *_SIZE, float(rng.uniform(0, 10))))
