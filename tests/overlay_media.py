"""Generated recorder overlays: names, dates of birth, IDs and device settings burned into in-body
frames, in several fonts, sizes, colours and positions (fonts: Debian's DejaVu, else Pillow's own)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

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

    @property
    def name(self) -> str:
        return f"{self.font.removesuffix('.ttf')}-{self.size}px{'-plate' if self.box else ''}"


STYLES = (
    Style("DejaVuSans.ttf", 30, (255, 255, 255)),
    Style("DejaVuSansMono.ttf", 26, (255, 255, 0)),
    Style("DejaVuSerif-Bold.ttf", 34, (0, 255, 0)),
    Style("DejaVuSansCondensed.ttf", 24, (200, 200, 255), box=True),
    Style("default", 22, (255, 255, 255)),
)


@dataclass(frozen=True)
class Line:
    text: str
    kind: str          # "name", "dob", "id", "settings"
    x: float           # share of the width / height of the top-left corner
    y: float


def patient_lines(seed: int) -> tuple[Line, ...]:
    rng = np.random.default_rng(seed)
    last = rng.choice(["MUELLER", "Okonkwo", "DUBOIS", "van der Berg", "Nakamura", "SCHNEIDER"])
    first = rng.choice(["Hans-Peter", "Amara", "Lucie", "Johanna", "Kenji", "Maria"])
    dob = f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.{rng.integers(1930, 2005)}"
    pid = f"{rng.integers(10_000_000, 99_999_999)}"
    left, right = 0.02, 0.72
    top, bottom = 0.03, 0.88
    return (Line(f"{last}, {first}", "name", left, top),
            Line(f"DOB {dob}", "dob", left, top + 0.05),
            Line(f"ID {pid}", "id", right, top),
            Line("Insuffl 12 mmHg  Flow 8 l/min", "settings", right - 0.12, bottom))


def font(style: Style, height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(9, round(style.size * height / 1080))
    if style.font != "default" and (DEJAVU / style.font).is_file():
        return ImageFont.truetype(str(DEJAVU / style.font), size)
    return ImageFont.load_default(size)


def draw(picture: npt.NDArray[np.uint8], lines: tuple[Line, ...], style: Style) -> npt.NDArray[np.uint8]:
    height, width = picture.shape[:2]
    image = Image.fromarray(picture)
    pen = ImageDraw.Draw(image)
    face = font(style, height)
    for line in lines:
        xy = (round(line.x * width), round(line.y * height))
        if style.box:
            left, top, right, bottom = pen.textbbox(xy, line.text, font=face)
            pen.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(20, 20, 30))
        pen.text(xy, line.text, font=face, fill=style.colour)
    return np.asarray(image)


def inbody(index: int, width: int, height: int, seed: int, rate: Fraction) -> npt.NDArray[np.uint8]:
    return synthetic.inbody_frame(np.random.default_rng(seed), width, height, float(index / rate))


def overlay_frames(count: int, width: int, height: int, style: Style, lines: tuple[Line, ...], seed: int = 3,
                   rate: Fraction = Fraction(25)) -> Iterator[npt.NDArray[np.uint8]]:
    for index in range(count):
        yield draw(inbody(index, width, height, seed, rate), lines, style)


def overlay_clip(path: Path, count: int, style: Style, lines: tuple[Line, ...], *, width: int = 640,
                 height: int = 360, seed: int = 3, gop: int = 25) -> Path:
    write_clip(path, overlay_frames(count, width, height, style, lines, seed), gop=gop,
               options={"crf": "20"})
    return path
