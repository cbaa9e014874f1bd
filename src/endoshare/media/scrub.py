"""Writing a shared output that carries nothing but pictures.

The output container is always MP4, opened here with FFmpeg's bit-exact flags so that the muxer adds
no ``encoder=Lavf…`` string and no creation time; we add no tag of our own.  Every video packet written
(copied, spliced or fresh from the encoder) passes the :class:`BitstreamScrubber`, which keeps only the
NAL unit types on the bitstream allow-list (:data:`endoshare.media.nal.ALLOWED_NAL_TYPES`), and the
track's parameter-set record (avcC/hvcC) is rebuilt from its parameter sets alone.  That removes SEI,
where recorders put user data and closed captions and x264 its whole command line, and anything else
a decoder would skip: filler, reserved and unspecified units.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from .nal import clean_record, nal_length_size, scrub_access_unit

#: Container tags that FFmpeg's MP4 demuxer derives from the file type box: technical, not added by us.
ALLOWED_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands"})
#: Stream tags the MP4 demuxer derives from mandatory boxes (hdlr, stsd).  The handler name is the
#: generic one we write ourselves; the verifier checks its value too.
ALLOWED_STREAM_TAGS = frozenset({"language", "handler_name", "vendor_id"})
GENERIC_HANDLER_NAMES = frozenset({"VideoHandler", "SoundHandler"})
ALLOWED_LANGUAGES = frozenset({"und"})

#: Codecs whose bitstream we can scrub; other codecs are re-encoded to one of these.
SCRUBBABLE_CODECS = frozenset({"h264", "hevc"})


def open_output(path: Path) -> av.container.OutputContainer:
    """An MP4 writer that adds no metadata of its own."""
    container = av.open(str(path), mode="w", format="mp4",
                        options={"movflags": "+faststart", "fflags": "+bitexact", "write_tmcd": "0"})
    container.metadata.clear()
    return container


def video_codec(name: str, mode: Literal["r", "w"]) -> av.VideoCodecContext:
    """A stand-alone video decoder ("r") or encoder ("w") of codec ``name``."""
    context = av.CodecContext.create(name, mode)
    if not isinstance(context, av.VideoCodecContext):
        raise ValueError(f"{name} is not a video codec")
    return context


def add_video_stream(container: av.container.OutputContainer, encoder: str, rate: Fraction,
                     options: dict[str, str] | None = None) -> av.VideoStream:
    """A new video stream of ``encoder`` (e.g. "libx264") in ``container``."""
    stream = container.add_stream(encoder, rate=rate, options=options or {})
    if not isinstance(stream, av.VideoStream):
        raise ValueError(f"{encoder} is not a video encoder")
    return stream


class BitstreamScrubber:
    """Keeps only allow-listed NAL units in the packets of one H.264/HEVC track and in its record.

    Filtering runs in Python on the NAL units of each packet, in the packet's own framing
    (length-prefixed with the record's length size, or Annex B when the track has no avcC/hvcC), so the
    muxer gets the packets as it would without us.
    """

    def __init__(self, codec: str, extradata: bytes | None) -> None:
        if codec not in SCRUBBABLE_CODECS:
            raise ValueError(f"no bitstream scrubber for codec {codec!r}")
        self.codec = codec
        self.length_size = nal_length_size(bytes(extradata or b""), codec)
        #: The track's record with parameter sets only: give it to the output stream.
        self.extradata = clean_record(extradata, codec)

    def scrub(self, packet: av.Packet) -> av.Packet:
        """A new packet with ``packet``'s timing and keyframe flag and only its allowed NAL units (side
        data is not carried over)."""
        clean = av.Packet(scrub_access_unit(bytes(packet), self.codec, self.length_size))
        clean.pts, clean.dts, clean.time_base = packet.pts, packet.dts, packet.time_base
        clean.is_keyframe = packet.is_keyframe
        if packet.duration:
            clean.duration = packet.duration
        return clean
