"""Stream-copy join of copy-compatible clips into one scrubbed MP4 track (nothing is re-encoded).

Timestamps are rebased so that clip n+1 starts exactly where clip n's last frame ends; every
packet passes the bitstream scrubber (NAL unit allow-list) and the track's avcC/hvcC keeps only its
parameter sets.  Only valid when ``JoinPlan.copy_compatible`` and nothing is redacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import av
import av.error

from ..errors import UnreadableMediaError
from ..media.join import JoinPlan
from ..media.probe import iter_video_packets, open_input, stream_time_base
from ..media.scrub import BitstreamScrubber, open_output
from ..types import Cancel, Progress, check_cancelled
from .common import CopiedRun, RenderResult
from .geometry import read_geometry

MP4_CODEC_TAGS = {"h264": "avc1", "hevc": "hvc1"}


def render_copy(plan: JoinPlan, out_path: Path, progress: Progress | None = None,
                cancel: Cancel | None = None) -> RenderResult:
    if not plan.copy_compatible:
        raise ValueError("render_copy needs copy-compatible clips: " + "; ".join(plan.reasons))
    total = plan.total_frames
    frame_duration = 1 / plan.target.frame_rate             # seconds
    first = plan.clips[0].info
    inputs = [open_input(clip.info.path) for clip in plan.clips]
    out = open_output(out_path)
    try:
        template = next(s for s in inputs[0].streams.video if s.index == first.video.index)
        out_stream = out.add_stream_from_template(template)
        out_stream.metadata.clear()
        scrubber = BitstreamScrubber(plan.codec, template.codec_context.extradata)
        out_stream.codec_context.extradata = scrubber.extradata or None
        # A TS/MKV source brings its own codec tag; MP4 needs the ISO one (hvc1 also plays in Safari).
        out_stream.codec_tag = MP4_CODEC_TAGS[plan.codec]
        out.start_encoding()

        runs: list[CopiedRun] = []

        def rebased() -> Iterator[av.Packet]:
            """Every clip's packets in turn, moved to where the clip starts on the output."""
            done = 0
            for clip, container in zip(plan.clips, inputs, strict=True):
                first_output = done
                stream = next(s for s in container.streams.video if s.index == clip.info.video.index)
                time_base = stream_time_base(stream, clip.info.path)
                # Where this clip starts on the output, in its own time base (exact when the rates agree).
                shift = round(clip.timeline_start * frame_duration / time_base) - (stream.start_time or 0)
                for packet in iter_video_packets(container, stream):
                    check_cancelled(cancel)
                    if packet.pts is None:
                        raise UnreadableMediaError(
                            f"{clip.info.path} has a video packet without a timestamp; it cannot be joined "
                            "by copy. Use --mode advanced to re-encode it.", path=clip.info.path)
                    if done == first_output:
                        runs.append(CopiedRun(clip.info.path, clip.info.video.index, 0, 0, first_output, shift))
                    runs[-1] = replace(runs[-1], count=runs[-1].count + 1)
                    packet.pts += shift
                    packet.dts = (packet.dts + shift) if packet.dts is not None else None
                    packet.time_base = time_base
                    done += 1
                    if progress is not None:
                        progress(min(done, total), total)
                    yield packet

        for packet in rebased():
            clean = scrubber.scrub(packet)
            clean.stream = out_stream
            out.mux(clean)
    except av.error.FFmpegError as exc:
        raise UnreadableMediaError(f"Joining the clips by copy failed ({exc}); run again with --mode advanced "
                                   "to re-encode them.", path=first.path) from None
    finally:
        out.close()
        for container in inputs:
            container.close()
    video = first.video
    # A "splices" verification decodes the first and last seconds and both sides of every clip join.
    reach = max(1, int(2 * plan.target.frame_rate))
    joins = [0, *(c.timeline_start for c in plan.clips[1:]), total]
    ranges: list[tuple[int, int]] = []
    for join in joins:
        start, end = max(0, join - reach), min(total, join + reach)
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        elif end > start:
            ranges.append((start, end))
    return RenderResult(method="stream-copy", codec=plan.codec, frame_count=total,
                        frame_rate=plan.target.frame_rate, width=video.width or 0, height=video.height or 0,
                        check_ranges=tuple(ranges), copied_runs=tuple(runs), geometry=read_geometry(plan))

