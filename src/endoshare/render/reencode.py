"""Full re-encode of the merged timeline with redaction applied frame by frame (advanced mode)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
from av.video.frame import PictureType

from ..media.frames import iter_timeline
from ..media.join import JoinPlan, VideoFormat
from ..media.scrub import SCRUBBABLE_CODECS, BitstreamScrubber, add_video_stream, open_output
from ..overlay.regions import OverlaySet
from ..timeline import SegmentSet
from ..types import Cancel, Progress
from .common import EncodeSettings, Redaction, RenderResult
from .geometry import RANGE_LIMITED, apply_geometry, read_geometry, scan_black_picture
from .redact import Redactor


def output_format(plan: JoinPlan, settings: EncodeSettings) -> VideoFormat:
    target = plan.target
    rate = settings.frame_rate or target.frame_rate
    if settings.height is None or settings.height == target.height:
        return VideoFormat(target.width, target.height, "yuv420p", rate)
    height = settings.height - settings.height % 2
    width = max(2, round(target.width * height / target.height / 2) * 2)
    return VideoFormat(width, height, "yuv420p", rate)


def render_reencode(plan: JoinPlan, segments: SegmentSet, redaction: Redaction, settings: EncodeSettings,
                    out_path: Path, progress: Progress | None = None,
                    cancel: Cancel | None = None, overlays: OverlaySet | None = None) -> RenderResult:
    """Decode every clip, redact the frames in ``segments``, encode to ``out_path`` (MP4, scrubbed).

    Frame-rate conversion picks timeline frames (no blending), so each output frame is exactly one
    timeline frame and inherits its redaction; that keeps the redaction check exact.
    """
    total = plan.total_frames
    redacted = segments.clipped(total).mask(total)
    kept_count = total - (sum(redacted) if redaction is Redaction.CUT else 0)
    out_fmt = output_format(plan, settings)
    step = plan.target.frame_rate / out_fmt.frame_rate      # timeline frames per output frame
    expected = max(0, -((-kept_count * out_fmt.frame_rate.numerator * plan.target.frame_rate.denominator)
                        // (out_fmt.frame_rate.denominator * plan.target.frame_rate.numerator)))
    # The first clip's pixel shape, colour description, scan and display rotation; every frame is
    # normalised to limited-range yuv420p, so that is the range the output declares.
    geometry = read_geometry(plan)
    redactor = Redactor(redaction, out_fmt, overlays=overlays, source=plan.target,
                        black=scan_black_picture(plan, out_fmt, geometry))

    container = open_output(out_path)
    try:
        stream = add_video_stream(container, settings.encoder, out_fmt.frame_rate, settings.encoder_options())
        stream.width, stream.height, stream.pix_fmt = out_fmt.width, out_fmt.height, "yuv420p"
        stream.codec_context.time_base = 1 / out_fmt.frame_rate
        apply_geometry(stream.codec_context, geometry, settings.codec, color_range=RANGE_LIMITED)
        if geometry is not None and geometry.rotation:
            stream.set_display_rotation(geometry.rotation)
        stream.thread_type = "AUTO"
        scrubber = None
        if settings.codec in SCRUBBABLE_CODECS:
            # The encoder's headers (x265 may add SEI to them) become the track's record: open the
            # encoder first and keep only its parameter sets.
            stream.codec_context.open()
            scrubber = BitstreamScrubber(settings.codec, stream.codec_context.extradata)
            stream.codec_context.extradata = scrubber.extradata or None
        container.start_encoding()

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                if scrubber is not None:
                    clean = scrubber.scrub(packet)
                    clean.stream = stream
                    packet = clean
                container.mux(packet)

        kept_index = -1
        written = 0
        previous_redacted = False
        for item in iter_timeline(plan, cancel):
            is_redacted = redacted[item.index]
            if is_redacted and redaction is Redaction.CUT:
                continue
            kept_index += 1
            while written < expected and int(written * step) == kept_index:
                frame = redactor.apply(item.frame, is_redacted, written, item.index)
                assert frame is not None        # cut frames were skipped above
                # An intra frame where redaction starts or ends: no redacted frame is predicted from
                # the picture it hides, and no ghost of it leaks into the next visible frame.
                frame.pict_type = PictureType.I if is_redacted != previous_redacted else PictureType.NONE
                previous_redacted = is_redacted
                frame.pts = written
                frame.time_base = stream.codec_context.time_base
                mux(stream.encode(frame))
                written += 1
            if progress is not None:
                progress(item.index + 1, total)
        mux(stream.encode(None))
    finally:
        container.close()
    notes: tuple[str, ...] = ()
    if out_fmt.frame_rate != plan.target.frame_rate:
        notes = (f"frame rate converted from {plan.target.frame_rate} to {out_fmt.frame_rate} by picking frames",)
    return RenderResult(method="re-encode", codec=settings.codec, frame_count=written,
                        frame_rate=out_fmt.frame_rate, width=out_fmt.width, height=out_fmt.height,
                        black_frames=tuple(redactor.black), blurred_frames=redactor.blurred,
                        cut_frames=sum(redacted) if redaction is Redaction.CUT else 0,
                        notes=(*notes, *((f"{redactor.masked} frames had burned-in text masked",)
                                         if redactor.masked else ())),
                        geometry=replace(geometry, color_range=RANGE_LIMITED) if geometry is not None else None)


