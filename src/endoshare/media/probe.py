"""One frozen record per media file: container, streams, every tag, and the places identifiers hide."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from ..errors import EmptyFileError, InputPermissionError, MissingInputError, NoVideoStreamError, UnreadableMediaError
from . import isobmff
from .nal import SeiUserData, is_sei, nal_length_size, sei_user_data, split_nal_units

#: Distinct SEI user-data payloads kept per file (a recorder may repeat the same one every frame).
MAX_SEI_RECORDS = 64

Tags = tuple[tuple[str, str], ...]


def _tags(metadata: dict[str, str] | None) -> Tags:
    return tuple(sorted((str(k), str(v)) for k, v in (metadata or {}).items()))


def _seconds(ticks: int | None, time_base: Fraction | None) -> float | None:
    return float(ticks * time_base) if ticks is not None and time_base is not None else None


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    try:
        frac = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return frac if frac > 0 else None


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str                      # video, audio, subtitle, data, attachment
    codec: str
    profile: str | None
    width: int | None
    height: int | None
    pix_fmt: str | None
    frame_rate: Fraction | None    # exact average frame rate of a video stream
    time_base: Fraction | None
    duration_seconds: float | None
    #: Displayed frames of a video stream (packets not hidden by an edit list).
    frame_count: int | None
    #: Packets present in the file but hidden by an edit list (privacy: they survive a copy).
    hidden_packets: int
    #: Packets with no presentation timestamp (some TS recorders): they cannot be stream-copied.
    untimed_packets: int
    tags: Tags
    extradata: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class ChapterInfo:
    #: None when the container gives the chapter no time base (its tags are still reported).
    start_seconds: float | None
    end_seconds: float | None
    tags: Tags


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    size_bytes: int
    container: str
    duration_seconds: float | None
    tags: Tags
    streams: tuple[StreamInfo, ...]
    chapters: tuple[ChapterInfo, ...]
    sei_user_data: tuple[SeiUserData, ...]
    mp4_times: tuple[isobmff.BoxTime, ...]
    mtime: float

    @property
    def video(self) -> StreamInfo:
        for stream in self.streams:
            if stream.kind == "video":
                return stream
        raise NoVideoStreamError(f"{self.path} has no video stream (audio-only?); remove it from the case "
                                 "folder or replace it with the video recording.", path=self.path)

    @property
    def recording_time(self) -> str | None:
        for key, value in self.tags:
            if key.lower() in ("creation_time", "date", "com.apple.quicktime.creationdate"):
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        def enc(value: object) -> object:
            if isinstance(value, Fraction):
                return f"{value.numerator}/{value.denominator}"
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, bytes):
                return value.hex()
            if isinstance(value, dict):
                return {k: enc(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [enc(v) for v in value]
            return value

        data = asdict(self)
        data["tags"] = dict(self.tags)
        data["chapters"] = [{**asdict(c), "tags": dict(c.tags)} for c in self.chapters]
        data["streams"] = [{**{k: v for k, v in asdict(s).items() if k != "extradata"}, "tags": dict(s.tags)}
                           for s in self.streams]
        encoded = enc(data)
        assert isinstance(encoded, dict)
        return encoded


def check_readable(path: Path) -> None:
    """Raise the typed error that tells the user why ``path`` cannot be used, before FFmpeg tries."""
    if not path.exists():
        raise MissingInputError(f"{path} does not exist; check the path.", path=path)
    if path.is_dir():
        raise UnreadableMediaError(f"{path} is a folder, not a video file.", path=path)
    if not os.access(path, os.R_OK):
        raise InputPermissionError(f"{path} cannot be read with your user's rights; ask for read access "
                                   "(e.g. chmod +r) or copy the file somewhere readable.", path=path)
    if path.stat().st_size == 0:
        raise EmptyFileError(f"{path} is empty (0 bytes): the recording was not written. Copy it again from "
                             "the recorder or remove it from the case folder.", path=path)


def open_input(path: Path, options: dict[str, str] | None = None) -> av.container.InputContainer:
    check_readable(path)
    try:
        return av.open(str(path), mode="r", options=options or {})
    except PermissionError:
        raise InputPermissionError(f"{path} cannot be read with your user's rights; ask for read access.",
                                   path=path) from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        hint = ("the recording looks truncated (no 'moov' index, e.g. after a power cut or an unplugged "
                "drive): copy it again from the recorder, or repair it with a tool such as untrunc"
                if "moov" in str(exc) or (isobmff.looks_like_isobmff(path)
                                          and not isobmff.has_top_level_box(path, b"moov")) else
                "it is not a video file FFmpeg can read, or it is damaged: check that it plays, "
                "copy it again, or remove it from the case folder")
        raise UnreadableMediaError(f"{path} cannot be opened ({exc}); {hint}.", path=path) from None


def stream_time_base(stream: av.stream.Stream, path: Path) -> Fraction:
    """The time base of a stream read from ``path`` (FFmpeg's demuxers always set one)."""
    if stream.time_base is None:
        raise UnreadableMediaError(f"{path}: stream {stream.index} has no time base, so its timestamps cannot "
                                   "be read; the file is damaged or was written by a broken muxer.", path=path)
    return Fraction(stream.time_base)


def iter_video_packets(container: av.container.InputContainer,
                       stream: av.video.stream.VideoStream) -> Iterator[av.Packet]:
    """Real packets of ``stream`` (drops the empty flush packet the demuxer ends with)."""
    for packet in container.demux(stream):
        if packet.size == 0 and packet.dts is None:
            continue
        yield packet


def probe(path: str | os.PathLike[str], *, scan_packets: bool = True) -> MediaInfo:
    """Read everything a user needs to judge what a file carries.

    ``scan_packets`` demuxes every video packet (no decoding) to count displayed and edit-list-hidden
    frames and to find SEI user data; it reads the whole file once.
    """
    path = Path(path)
    with open_input(path) as container:
        streams: list[StreamInfo] = []
        sei_found: dict[tuple[int, str, str], SeiUserData] = {}
        counts: dict[int, tuple[int, int, int, bool]] = {}
        video = next((s for s in container.streams.video
                      if not (s.disposition & av.stream.Disposition.attached_pic)), None)
        if scan_packets and video is not None:
            try:
                counts[video.index] = _scan_video(container, video, sei_found)
            except av.error.FFmpegError as exc:
                raise UnreadableMediaError(f"{path} is damaged ({exc}); copy it again from the recorder or "
                                           "remove it from the case folder.", path=path) from None
            _check_complete(path, video, counts[video.index])
        for stream in container.streams:
            ctx = stream.codec_context if stream.type in ("video", "audio", "subtitle") else None
            kind = stream.type
            if kind == "video" and stream.disposition & av.stream.Disposition.attached_pic:
                kind = "attachment"
            shown, hidden, untimed, _ = counts.get(stream.index, (None, 0, 0, False))
            if shown is None and kind == "video" and stream.frames:
                shown = int(stream.frames)
            codec_name = None
            try:
                codec_name = stream.codec_context.name if ctx is not None else None
            except (AttributeError, av.error.FFmpegError):
                codec_name = None
            video_ctx = stream.codec_context if isinstance(stream, av.VideoStream) and kind == "video" else None
            streams.append(StreamInfo(
                index=stream.index,
                kind=kind,
                codec=codec_name or _codec_name(stream),
                profile=getattr(stream, "profile", None) if kind in ("video", "audio") else None,
                width=video_ctx.width if video_ctx is not None else None,
                height=video_ctx.height if video_ctx is not None else None,
                pix_fmt=video_ctx.format.name if video_ctx is not None and video_ctx.format else None,
                frame_rate=stream_frame_rate(stream) if kind == "video" else None,
                time_base=_fraction(stream.time_base),
                duration_seconds=_seconds(stream.duration, stream.time_base),
                frame_count=shown,
                hidden_packets=hidden,
                untimed_packets=untimed,
                tags=_tags(stream.metadata),
                extradata=bytes(ctx.extradata or b"") if ctx is not None and kind == "video" else b"",
            ))
        chapters = tuple(
            ChapterInfo(_seconds(ch["start"], ch["time_base"]), _seconds(ch["end"], ch["time_base"]),
                        _tags(ch.get("metadata")))
            for ch in container.chapters())
        duration = container.duration / 1_000_000 if container.duration is not None else None
        info = MediaInfo(
            path=path,
            size_bytes=path.stat().st_size,
            container=container.format.name,
            duration_seconds=duration,
            tags=_tags(container.metadata),
            streams=tuple(streams),
            chapters=chapters,
            sei_user_data=tuple(sei_found.values()),
            mp4_times=tuple(isobmff.box_times(path)) if isobmff.looks_like_isobmff(path) else (),
            mtime=path.stat().st_mtime,
        )
    return info


def stream_frame_rate(stream: Any) -> Fraction | None:
    """A video stream's frame rate, read here only (probing and detection both): the average rate, unless
    it is more than twice the demuxer's guess from the codec (FFmpeg's DV demuxer reports one frame per
    time-base tick: 60000 fps, which made a 0.2 s detection margin cover a whole clip).  A guess above the
    average is normal (interlaced streams report their field rate) and is not used."""
    average, guessed = _fraction(stream.average_rate), _fraction(stream.guessed_rate)
    if average is None or (guessed is not None and average > guessed * 2):
        return guessed or _fraction(stream.base_rate)
    return average


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec.name)
    except (AttributeError, av.error.FFmpegError):
        return "unknown"


def _check_complete(path: Path, stream: av.video.stream.VideoStream, counts: tuple[int, int, int, bool]) -> None:
    """A recording whose index lists more pictures than the file holds, or whose last picture is cut short
    (an MP4 written with its index first, then cut off by a power failure or an interrupted copy)."""
    shown, hidden, _, last_cut_short = counts
    listed = int(stream.frames or 0)
    if shown + hidden < listed or last_cut_short:
        held = shown + hidden - int(last_cut_short)
        raise UnreadableMediaError(
            f"{path} is truncated: its index lists {listed or shown + hidden} pictures but only {held} are "
            "complete in the file (the end of the recording is missing, e.g. after a power cut or an "
            "interrupted copy); copy it again from the recorder, or repair it with a tool such as untrunc.",
            path=path)


def _scan_video(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                sei_found: dict[tuple[int, str, str], SeiUserData]) -> tuple[int, int, int, bool]:
    """Pictures shown, hidden by an edit list and without a timestamp, and whether the last one is cut short
    (an ISO BMFF sample whose bytes end before the file does)."""
    codec = stream.codec_context.name
    parse_sei = codec in ("h264", "hevc")
    length_size = nal_length_size(bytes(stream.codec_context.extradata or b""), codec) if parse_sei else None
    if parse_sei and stream.codec_context.extradata:
        _collect_sei(bytes(stream.codec_context.extradata), codec, None, sei_found)
    shown = hidden = untimed = 0
    last: av.Packet | None = None
    for packet in iter_video_packets(container, stream):
        last = packet
        if packet.pts is None:
            untimed += 1
        if packet.is_discard:
            hidden += 1
        else:
            shown += 1
        if parse_sei and len(sei_found) < MAX_SEI_RECORDS:
            _collect_sei(bytes(packet), codec, length_size, sei_found)
    # Other demuxers flag damaged packets anywhere (an MPEG-TS continuity error); only an indexed sample that
    # the file ends inside is certain to be a truncation.
    cut_short = last is not None and last.is_corrupt and container.format.name.startswith("mov,mp4")
    return shown, hidden, untimed, cut_short


def _collect_sei(data: bytes, codec: str, length_size: int | None,
                 sei_found: dict[tuple[int, str, str], SeiUserData]) -> None:
    if length_size is None and data[:1] == b"\x01":
        return  # avcC/hvcC extradata: parameter-set arrays, scanned through the packets instead
    for unit in split_nal_units(data, length_size):
        if is_sei(unit, codec):
            for item in sei_user_data(unit, codec):
                sei_found.setdefault((item.payload_type, item.uuid, item.text), item)
