"""Generated recorder overlays: names, dates of birth, IDs and device settings burned into in-body
frames, in several fonts, sizes, colours and positions (fonts: Debian's DejaVu, else Pillow's own)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from endoshare import synthetic
from endoshare.sample import write_clip

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


@dataclass(frozen=True)
class Style:
    font: str          # a DejaVu file name, or "default" for Pillow's built-in font
    size: int          # pixels, at a 1080-line picture (scaled with the picture)
    colour: tuple[int, int, int]
    box: bool = False  # drawn on a dark plate (many recorders do)
    opacity: int = 255  # below 255: blended over the picture (half-transparent recorder text)

    @property
    def name(self) -> str:
        return (f"{self.font.removesuffix('.ttf')}-{self.size}px{'-plate' if self.box else ''}"
                f"{f'-alpha{self.opacity}' if self.opacity < 255 else ''}")


STYLES = (
    Style("DejaVuSans.ttf", 30, (255, 255, 255)),
    Style("DejaVuSansMono.ttf", 26, (255, 255, 0)),
    Style("DejaVuSerif-Bold.ttf", 34, (0, 255, 0)),
    Style("DejaVuSansCondensed.ttf", 24, (200, 200, 255), box=True),
    Style("default", 22, (255, 255, 255)),
    Style("DejaVuSans-Bold.ttf", 28, (255, 255, 255), opacity=150),
)


@dataclass(frozen=True)
class Line:
    text: str
    kind: str          # "name", "dob", "id", "settings"
    x: float           # share of the width / height of the top-left corner
    y: float


def patient_lines(seed: int, layout: int = 0) -> tuple[Line, ...]:
    """Name, date of birth, ID and a device-settings line; ``layout`` 1 puts them in other corners."""
    rng = np.random.default_rng(seed)
    last = rng.choice(["MUELLER", "Okonkwo", "DUBOIS", "van der Berg", "Nakamura", "SCHNEIDER"])
    first = rng.choice(["Hans-Peter", "Amara", "Lucie", "Johanna", "Kenji", "Maria"])
    dob = f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.{rng.integers(1930, 2005)}"
    pid = f"{rng.integers(10_000_000, 99_999_999)}"
    if layout == 0:
        return (Line(f"{last}, {first}", "name", 0.02, 0.03),
                Line(f"DOB {dob}", "dob", 0.02, 0.08),
                Line(f"ID {pid}", "id", 0.72, 0.03),
                Line("Insuffl 12 mmHg  Flow 8 l/min", "settings", 0.60, 0.88))
    if layout == 2:         # over the picture itself, inside the scope's field of view
        return (Line(f"{first} {last}", "name", 0.28, 0.30),
                Line(f"{dob}", "dob", 0.28, 0.37),
                Line(f"PID {pid}", "id", 0.50, 0.60),
                Line("CO2 12 mmHg", "settings", 0.35, 0.70))
    return (Line(f"Pat: {first} {last}", "name", 0.03, 0.84),
            Line(f"geb. {dob}", "dob", 0.03, 0.90),
            Line(f"MRN {pid}", "id", 0.03, 0.04),
            Line("Light 80%  Gain 2", "settings", 0.74, 0.05))


def font(style: Style, height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(9, round(style.size * height / 1080))
    if style.font != "default" and (DEJAVU / style.font).is_file():
        return ImageFont.truetype(str(DEJAVU / style.font), size)
    return ImageFont.load_default(size)


def draw(picture: npt.NDArray[np.uint8], lines: tuple[Line, ...], style: Style) -> npt.NDArray[np.uint8]:
    height, width = picture.shape[:2]
    image = Image.fromarray(np.array(picture)).convert("RGBA")
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    face = font(style, height)
    for line in lines:
        xy = (round(line.x * width), round(line.y * height))
        if style.box:
            left, top, right, bottom = pen.textbbox(xy, line.text, font=face)
            pen.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(20, 20, 30, style.opacity))
        pen.text(xy, line.text, font=face, fill=(*style.colour, style.opacity))
    return np.asarray(Image.alpha_composite(image, layer).convert("RGB"))


def text_boxes(lines: tuple[Line, ...], style: Style, width: int, height: int) -> dict[str, tuple[int, int, int, int]]:
    """Line kind → (x0, y0, x1, y1) of the ink drawn for it."""
    pen = ImageDraw.Draw(Image.new("RGB", (width, height)))
    face = font(style, height)
    boxes = {}
    for line in lines:
        x0, y0, x1, y1 = pen.textbbox((round(line.x * width), round(line.y * height)), line.text, font=face)
        boxes[line.kind] = (int(x0), int(y0), int(x1), int(y1))
    return boxes


@functools.lru_cache(maxsize=256)
def inbody(index: int, width: int, height: int, seed: int, rate: Fraction) -> npt.NDArray[np.uint8]:
    """An in-body picture of a slowly moving scene (cached: several styles share the backgrounds)."""
    frame = synthetic.inbody_frame(np.random.default_rng(seed), width, height, float(index / rate))
    frame.setflags(write=False)
    return frame


def overlay_frames(count: int, width: int, height: int, style: Style, lines: tuple[Line, ...], seed: int = 3,
                   rate: Fraction = Fraction(25)) -> Iterator[npt.NDArray[np.uint8]]:
    for index in range(count):
        yield draw(inbody(index, width, height, seed, rate), lines, style)


def overlay_clip(path: Path, count: int, style: Style, lines: tuple[Line, ...], *, width: int = 640,
                 height: int = 360, seed: int = 3, gop: int = 25) -> Path:
    write_clip(path, overlay_frames(count, width, height, style, lines, seed), gop=gop,
               options={"crf": "20"})
    return path
