"""A video's keyframes decoded on every core, each as if the video started there, in decode order.

Detection's coarse pass and the overlay finder's own pass read a clip from start to end and decode only its
keyframes: this is the one place that does it for both.  Each keyframe packet goes to a decoder of its own,
fresh or reset (:data:`RESETTABLE`), and is drained after it, so that a keyframe gives the picture a seek to
it would give, whatever came before.  One decoder fed the keyframes alone does not: on an open-GOP H.264
clip (non-IDR keyframes with recovery points) it gave 3 of 8 keyframes, last first, as if the skipped
pictures between them were missing references.  The decoders run in worker threads (PyAV releases the GIL
while FFmpeg demuxes, decodes and scales), one per core, while the caller's thread demuxes and uses the
pictures already decoded; the pictures are handed over in packet order (presentation order for keyframes),
and at most :data:`AHEAD` keyframes per decoder are decoded ahead of the caller, which bounds memory.

Speed: the single decoder this replaced was frame-threaded, and FFmpeg's frame threads already decode
independent keyframes side by side: on 106 keyframes of 1080p H.264 (quiet machine) one thread took 2.15 s,
frame threads 1.22 s, this 1.13-1.16 s for 1-3 % more CPU (``benchmarks/bench_keyframes.py``).

With ``every_reference`` every packet goes to one frame-threaded decoder instead, in order (the
reference pictures between keyframes depend on each other).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ..errors import NoVideoStreamError, UnreadableMediaError
from .probe import iter_video_packets, open_input

#: Keyframes decoded ahead of the caller, per decoder: enough to keep every decoder busy while the caller
#: works on one picture, few enough that memory stays small (a 1080p picture is about 3 MB).
AHEAD = 2

PacketCallback = Callable[[av.Packet], None]

#: Decoders that, reset after a keyframe (``avcodec_flush_buffers``), give the next keyframe exactly as a fresh
#: one does (``tests/test_keyframes.py``): each worker keeps one, which saves most of the 5-8 % of CPU a fresh
#: decoder per keyframe costs (its picture buffers and tables are allocated anew).  Not HEVC: FFmpeg's HEVC decoder
#: gives wrong pictures from the third keyframe on after resets (x265 open GOPs, PyAV 18).
RESETTABLE = frozenset({"h264", "mpeg2video"})


def default_decoders() -> int:
    """One decoder per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:      # not on Linux
        return max(1, os.cpu_count() or 1)


def video_stream(container: av.container.InputContainer, path: Path,
                 index: int | None = None) -> av.video.stream.VideoStream:
    """Stream ``index`` of ``container``, or (None) its first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if index is None and not stream.disposition & av.stream.Disposition.attached_pic or stream.index == index:
            return stream
    raise NoVideoStreamError(f"{path} has no video stream (audio-only?); give the video recording instead.",
                             path=path)


def decoder_options(skip_loop_filter: bool) -> dict[str, str]:
    """FFmpeg decoder options of the detection and overlay passes: skipping the loop filter saves decoding
    time and changes pictures too little for a detector to tell."""
    return {"skip_loop_filter": "all"} if skip_loop_filter else {}


def damaged(path: Path, exc: Exception) -> UnreadableMediaError:
    return UnreadableMediaError(f"{path} cannot be read to the end ({exc}); the recording is damaged: check that "
                                "it plays, copy it again from the recorder, or remove it from the case.", path=path)


class KeyframeReader:
    """The keyframes of ``path``'s video stream: open it with ``with``, then iterate to get ``(pts, picture)``
    of each decoded keyframe, in order.

    Every packet that is displayed (not hidden by an edit list) is first given to ``on_packet``, in
    decode order, on the caller's thread: it keeps the packet index, reports progress and may raise to
    stop (cancellation).  Pictures without a pts are counted in :attr:`frames_decoded` only.  A corrupt
    packet gives no picture; a stream that cannot be demuxed or decoded raises
    :class:`~endoshare.errors.UnreadableMediaError` naming the file.  Leaving the ``with`` block early (an
    exception) stops the decoders before the file is closed.
    """

    def __init__(self, path: Path, *, stream_index: int | None = None, on_packet: PacketCallback | None = None,
                 skip_loop_filter: bool = False, decoders: int | None = None, every_reference: bool = False,
                 threads: int = 0) -> None:
        """``decoders``: keyframe decoders at once (None: one per core); ``threads``: FFmpeg's own threads
        for the single decoder of ``every_reference`` (0: FFmpeg decides)."""
        self.path = path
        self.on_packet = on_packet
        self.options = decoder_options(skip_loop_filter)
        self.decoders = default_decoders() if decoders is None else decoders
        if self.decoders < 1:
            raise ValueError(f"at least one keyframe decoder is needed, got {decoders}")
        self.every_reference = every_reference
        self.threads = threads
        self.frames_decoded = 0
        self._container = open_input(path)
        self._running: Generator[tuple[int, av.VideoFrame], None, None] | None = None
        try:
            self.stream = video_stream(self._container, path, stream_index)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> KeyframeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._running is not None:
            self._running.close()       # joins the decoder threads
        self._container.close()

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        if self._running is not None:
            raise RuntimeError("a KeyframeReader is read once")
        self._running = self._sequential() if self.every_reference else self._shared_out()
        return self._running

    def _packets(self) -> Iterator[av.Packet]:
        try:
            for packet in iter_video_packets(self._container, self.stream):
                if packet.is_discard:
                    continue        # hidden by an edit list: not a frame of the timeline
                if self.on_packet is not None:
                    self.on_packet(packet)
                yield packet
        except av.error.FFmpegError as exc:
            raise damaged(self.path, exc) from None

    def _pictures(self, frames: list[av.VideoFrame]) -> Iterator[tuple[int, av.VideoFrame]]:
        for frame in frames:
            self.frames_decoded += 1
            if frame.pts is not None:
                yield int(frame.pts), frame

    def _sequential(self) -> Generator[tuple[int, av.VideoFrame], None, None]:
        context = self.stream.codec_context
        context.skip_frame = "NONREF"
        context.thread_type = "AUTO"
        context.thread_count = self.threads
        context.options = self.options
        for packet in self._packets():
            yield from self._pictures(decode_packet(context, packet, self.path))
        yield from self._pictures(decode_packet(context, None, self.path))

    def _shared_out(self) -> Generator[tuple[int, av.VideoFrame], None, None]:
        template = self.stream.codec_context
        settings = _DecoderSettings.of(template, self.options)

        kept = threading.local()        # each worker's decoder, for the codecs that may be reset

        def decode(packet: av.Packet) -> list[av.VideoFrame]:
            context = getattr(kept, "context", None) or settings.decoder()
            frames = decode_packet(context, packet, self.path)
            frames.extend(decode_packet(context, None, self.path))        # drain: every picture of this packet
            if settings.codec in RESETTABLE:
                context.flush_buffers()
                kept.context = context
            return frames

        pending: deque[Future[list[av.VideoFrame]]] = deque()
        with ThreadPoolExecutor(self.decoders, thread_name_prefix="keyframes") as pool:
            try:
                for packet in self._packets():
                    if not packet.is_keyframe:
                        continue
                    pending.append(pool.submit(decode, packet))
                    while len(pending) > AHEAD * self.decoders or (pending and pending[0].done()):
                        yield from self._pictures(pending.popleft().result())
                while pending:
                    yield from self._pictures(pending.popleft().result())
            finally:
                # Stopped early: drop what has not started; the pool lets what runs finish before the file closes.
                for future in pending:
                    future.cancel()


@dataclass(frozen=True)
class _DecoderSettings:
    """What FFmpeg set up the stream's decoder with (from the container), to open fresh ones like it.

    Only the settings a decoder reads from its context are copied: the bitstream states the rest.
    """

    codec: str
    extradata: bytes | None
    width: int
    height: int
    pix_fmt: str | None
    bits_per_coded_sample: int
    codec_tag: str | None
    colour: tuple[int, int, int, int]          # range, primaries, transfer, matrix: when the bitstream is silent
    sample_aspect_ratio: Fraction | None
    field_order: int
    options: dict[str, str]

    @classmethod
    def of(cls, context: av.video.codeccontext.VideoCodecContext, options: dict[str, str]) -> _DecoderSettings:
        try:
            tag: str | None = context.codec_tag
        except UnicodeDecodeError:      # PyAV reads a tag as ASCII; one that is not cannot be set back either
            tag = None
        return cls(context.name, context.extradata, context.width, context.height, context.pix_fmt,
                   context.bits_per_coded_sample, tag,
                   (context.color_range, context.color_primaries, context.color_trc, context.colorspace),
                   context.sample_aspect_ratio, context.field_order, dict(options))

    def decoder(self) -> av.video.codeccontext.VideoCodecContext:
        context = av.CodecContext.create(self.codec, "r")
        assert isinstance(context, av.video.codeccontext.VideoCodecContext)
        context.extradata = self.extradata
        context.width, context.height = self.width, self.height
        if self.pix_fmt is not None:
            context.pix_fmt = self.pix_fmt
        context.bits_per_coded_sample = self.bits_per_coded_sample
        if self.codec_tag is not None:
            context.codec_tag = self.codec_tag
        context.color_range, context.color_primaries, context.color_trc, context.colorspace = self.colour
        if self.sample_aspect_ratio is not None:
            context.sample_aspect_ratio = self.sample_aspect_ratio
        context.field_order = self.field_order
        context.skip_frame = "NONKEY"
        context.thread_count = 1        # the keyframe decoders are the threads (see the module doc)
        context.options = dict(self.options)
        return context


def decode_packet(context: av.video.codeccontext.VideoCodecContext, packet: av.Packet | None,
                  path: Path) -> list[av.VideoFrame]:
    """The pictures ``packet`` gives (None: drain the decoder).  A corrupt packet gives none and the pictures
    around it are still decoded (a frame it should have given stays unsampled, which the smoothing labels
    conservatively); any other decoding error names the file."""
    try:
        return list(context.decode(packet))
    except av.error.InvalidDataError:
        return []
    except av.error.FFmpegError as exc:
        raise damaged(path, exc) from None
