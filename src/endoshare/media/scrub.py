"""Writing a shared output that carries nothing but pictures.

The output container is always MP4, opened here with FFmpeg's bit-exact flags so that the muxer adds
no ``encoder=Lavf…`` string and no creation time; we add no tag of our own.  Every video packet passes
through FFmpeg's ``filter_units`` bitstream filter, which removes SEI NAL units (H.264 type 6, HEVC
39/40) from the packets *and* from the avcC/hvcC parameter sets: that is where recorders put user
data, closed captions and encoder version strings (x264 writes its whole command line there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import av
import av.bitstream

#: Container tags that FFmpeg's MP4 demuxer derives from the file type box: technical, not added by us.
ALLOWED_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands"})
#: Stream tags the MP4 demuxer derives from mandatory boxes (hdlr, stsd).  The handler name is the
#: generic one we write ourselves; the verifier checks its value too.
ALLOWED_STREAM_TAGS = frozenset({"language", "handler_name", "vendor_id"})
GENERIC_HANDLER_NAMES = frozenset({"VideoHandler", "SoundHandler"})
ALLOWED_LANGUAGES = frozenset({"und"})

_SEI_FILTER = {
    "h264": "filter_units=remove_types=6",
    "hevc": "filter_units=remove_types=39|40",
}
#: Codecs whose SEI we can remove; other codecs are re-encoded to one of these.
SCRUBBABLE_CODECS = frozenset(_SEI_FILTER)


def open_output(path: Path) -> av.container.OutputContainer:
    """An MP4 writer that adds no metadata of its own."""
    container = av.open(str(path), mode="w", format="mp4",
                        options={"movflags": "+faststart", "fflags": "+bitexact", "write_tmcd": "0"})
    container.metadata.clear()
    return container


def sei_filter(codec: str, in_stream: object, out_stream: object) -> av.bitstream.BitStreamFilterContext:
    """A bitstream filter that strips SEI from ``codec`` packets and rewrites ``out_stream``'s extradata."""
    try:
        description = _SEI_FILTER[codec]
    except KeyError:
        raise ValueError(f"no SEI scrubber for codec {codec!r}") from None
    return av.bitstream.BitStreamFilterContext(description, in_stream, out_stream)


def scrub_packets(bsf: av.bitstream.BitStreamFilterContext,
                  packets: Iterable[av.Packet]) -> Iterator[av.Packet]:
    """Packets through the SEI filter, then what the filter holds back at the end."""
    for packet in packets:
        yield from bsf.filter(packet)
    yield from bsf.filter(None)
