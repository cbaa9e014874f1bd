"""A generated sample case: synthetic clips with planted identifiers and out-of-body stretches.

Used by the demo (``endoshare sample``) and by tests.  Everything identifying is planted on purpose in
the places recorders use: the folder name, container tags (title, comment, creation time), the video
track's handler name and language, and SEI user data inside the H.264 bitstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.bitstream
import numpy as np
import numpy.typing as npt

from . import synthetic
from .media.scrub import add_video_stream
from .timeline import SegmentSet

#: UUID for planted SEI user data (any 16 bytes will do).
PLANTED_SEI_UUID = "086f3693-b7b3-4f2c-9653-21492feee5b8"
SAMPLE_PATIENT = "Jane Doe 1957-03-14 MRN4711"


@dataclass(frozen=True)
class ClipSpec:
    name: str
    #: One label per frame: True = out of body.
    oob: tuple[bool, ...]


@dataclass(frozen=True)
class SampleCase:
    folder: Path
    clips: tuple[Path, ...]
    #: Per merged-timeline frame: "oob" or "inbody".
    labels: tuple[str, ...]
    segments: SegmentSet
    planted: str


def write_clip(path: Path, frames: Iterable[npt.NDArray[np.uint8]], *, rate: Fraction = Fraction(25),
               gop: int = 50, codec: str = "libx264", planted: str | None = None,
               options: dict[str, str] | None = None, container_format: str | None = None) -> None:
    """Encode RGB frames to ``path``; with ``planted``, write it into tags, handler name and SEI user data."""
    container = av.open(str(path), mode="w", format=container_format)
    stream: av.VideoStream | None = None
    sei = None
    try:
        if planted:
            container.metadata.update({"title": planted, "comment": f"Patient: {planted}",
                                       "creation_time": "2024-05-06T07:08:09Z"})
        for index, rgb in enumerate(frames):
            if stream is None:
                height, width = rgb.shape[:2]
                stream = add_video_stream(container, codec, rate,
                                          {"preset": "veryfast", "crf": "26", **(options or {})})
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.gop_size = gop
                if planted:
                    stream.metadata.update({"handler_name": planted, "language": "deu", "title": planted})
                container.start_encoding()
                if planted and codec == "libx264":
                    sei = av.bitstream.BitStreamFilterContext(
                        f"h264_metadata=sei_user_data={PLANTED_SEI_UUID}+{planted}", stream)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            _mux(container, sei, stream.encode(frame))
        if stream is None:
            raise ValueError("write_clip needs at least one frame")
        _mux(container, sei, stream.encode(None))
        if sei is not None:
            _mux(container, None, list(sei.filter(None)))
    finally:
        container.close()


def _mux(container: av.container.OutputContainer, sei: av.bitstream.BitStreamFilterContext | None,
         packets: list[av.Packet]) -> None:
    for packet in packets:
        for out in (sei.filter(packet) if sei is not None else [packet]):
            container.mux(out)


def synthetic_frames(labels: Iterable[bool], width: int, height: int, seed: int,
                     rate: Fraction = Fraction(25)) -> Iterable[npt.NDArray[np.uint8]]:
    """Frames that show one in-body scene and one OR scene, switching where ``labels`` says."""
    for index, oob in enumerate(labels):
        rng = np.random.default_rng(seed * 2 + (1 if oob else 0))
        t = float(index / rate)
        yield (synthetic.oob_frame if oob else synthetic.inbody_frame)(rng, width, height, t)


def default_clips(rate: int = 25) -> tuple[ClipSpec, ...]:
    """Three clips (named so that plain sorting would misorder them): OoB at the start, a short
    excursion between two keyframes, a longer one across a clip boundary, and OoB at the end."""
    def spans(length: int, oob: list[tuple[int, int]]) -> tuple[bool, ...]:
        labels = [False] * length
        for start, end in oob:
            labels[start:end] = [True] * (end - start)
        return tuple(labels)

    return (
        ClipSpec("VID1.mp4", spans(8 * rate, [(0, 2 * rate)])),
        ClipSpec("VID2.mp4", spans(8 * rate, [(3 * rate + 5, 3 * rate + 15), (7 * rate, 8 * rate)])),
        ClipSpec("VID10.mp4", spans(8 * rate, [(0, rate), (7 * rate, 8 * rate)])),
    )


def make_sample_case(root: Path, *, width: int = 640, height: int = 360,
                     clips: tuple[ClipSpec, ...] | None = None,
                     on_clip: Callable[[int, int], None] | None = None) -> SampleCase:
    """Write a sample case folder under ``root`` and its ground truth (``truth.json``, ``segments.json``)."""
    clips = clips or default_clips()
    folder = root / f"{SAMPLE_PATIENT}"
    folder.mkdir(parents=True, exist_ok=True)
    labels: list[str] = []
    paths = []
    for number, spec in enumerate(clips):
        path = folder / spec.name
        write_clip(path, synthetic_frames(spec.oob, width, height, seed=number), planted=SAMPLE_PATIENT)
        paths.append(path)
        labels.extend("oob" if o else "inbody" for o in spec.oob)
        if on_clip is not None:
            on_clip(number + 1, len(clips))
    segments = SegmentSet.of((i, i + 1) for i, label in enumerate(labels) if label == "oob")
    (root / "truth.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    (root / "segments.json").write_text(json.dumps({"segments": segments.to_json()}), encoding="utf-8")
    return SampleCase(folder, tuple(paths), tuple(labels), segments, SAMPLE_PATIENT)
