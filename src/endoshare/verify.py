"""Re-open a written output and prove it is safe to share, before it gets its final name.

It sits above :mod:`endoshare.render` (it checks a :class:`~endoshare.render.common.RenderResult`'s
promises) and below :mod:`endoshare.pipeline`, which publishes nothing that failed a check.

Checks (each reported by name in the audit report; :func:`verify_output` returns them in this order):
- ``metadata_allow_list``: only technical container/stream tags, one video track (and audio only if
  asked), no chapters, no subtitle/data/timecode/attachment streams, zero MP4 creation/modification times,
  and no SEI user-data payload in the bitstream (found by the packet scan below);
- ``no_identifying_strings``: none of the case's identifiers nor an encoder/muxer signature in the bytes;
- ``no_hidden_samples``: samples in the file (edit lists ignored) == frames displayed;
- ``sample_framing`` (H.264/HEVC): every sample is length-prefixed NAL units (no Annex B start codes);
- ``bitstream_allow_list``: every NAL unit of every sample (a sample hidden by an edit list fails
  ``no_hidden_samples``) is of an allowed type (:data:`endoshare.media.nal.ALLOWED_NAL_TYPES`) and the
  avcC/hvcC holds parameter sets only;
- ``copied_packets`` (mode "changes"): every stream-copied packet is its source packet (see
  :mod:`endoshare.packet_identity`), every other packet lies in a decoded range;
- ``decodes_cleanly``: every decoded packet (all of them in mode "full") decodes with no FFmpeg error;
- ``frame_count`` / ``duration``: what the renderer promised;
- ``redaction``: black frames are black (luma <= 20 everywhere), blurred frames carry little detail;
- ``geometry``: decoded frames show the promised pixel shape, colour description and rotation;
- ``audio`` (only when audio is kept): one audio stream that decodes, lasts as long as the video and is
  silent where the video is redacted.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from ahocorasick_rs import BytesAhoCorasick

from .media import isobmff
from .media.frames import detail_energy, luma_plane
from .media.nal import (
    ALLOWED_NAL_TYPES,
    SeiUserData,
    disallowed_record_units,
    disallowed_units,
    is_length_prefixed,
    is_sei,
    nal_length_size,
    nal_type,
    record_units,
    sei_user_data,
    split_nal_units,
)
from .media.probe import MAX_SEI_RECORDS, iter_video_packets, open_input, probe, stream_time_base
from .media.scrub import ALLOWED_CONTAINER_TAGS, ALLOWED_LANGUAGES, ALLOWED_STREAM_TAGS, GENERIC_HANDLER_NAMES
from .packet_identity import PacketIdentity
from .render.common import RenderResult, RepeatedRun
from .types import Cancel, Progress, check_cancelled

BLACK_LUMA_MAX = 20
#: FFmpeg's AVColorRange for limited ("tv", MPEG) range.
LIMITED_RANGE = 1
#: A blurred frame may keep at most this share of its source's detail energy.
BLUR_MAX_DETAIL_RATIO = 0.25
#: Signatures that encoders and muxers leave behind (specific enough not to occur by chance): the bytes
#: searched for, and the pattern that must follow them (b"" for none).
ENCODER_SIGNATURES = ((b"x264 - core", b""), (b"x265 (build", b""), (b"Lavf", rb"\d\d\."), (b"Lavc", rb"\d\d\."),
                      (b"SVT-AV1", b""), (b"HandBrake", b""))
#: Identifiers shorter than this are not searched for in the bytes: they would match compressed data by chance.
MIN_SEARCHABLE_IDENTIFIER = 6
#: Bytes after a signature's literal that its pattern may look at.
SIGNATURE_TAIL_BYTES = 16


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


#: "changes" proves copied groups by packet identity and decodes the rest; "full" decodes every frame;
#: "splices" decodes what changed plus every keyframe (no packet identity).
VERIFY_MODES = ("changes", "full", "splices")
DEFAULT_VERIFY_MODE = "changes"


def verify_output(path: Path, expected: RenderResult, identifiers: tuple[str, ...] = (),
                  keep_audio: bool = False, mode: str = DEFAULT_VERIFY_MODE, progress: Progress | None = None,
                  cancel: Cancel | None = None,
                  sources: tuple[Path, ...] | None = None) -> tuple[CheckResult, ...]:
    """Run every check.  ``mode`` "full" decodes every frame; "changes" decodes only the frames the
    renderer changed (``expected.check_ranges``: re-encoded groups, the group before every splice and clip
    join and the first picture after it) and proves every other packet equal to its source packet (``copied_packets``);
    "splices" decodes the changed frames plus every keyframe.  A render that reports no check ranges or
    copied runs is decoded in full whatever the mode.  ``sources``: the case's clips, the only files a
    copied packet may come from."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify mode must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    if expected.check_ranges is None or (mode == "changes" and expected.copied_runs is None):
        mode = "full"
    # What to decode: every frame (None), or the changed ranges only.
    ranges = None if mode == "full" else expected.check_ranges
    with open_input(path) as container:
        has_video = bool(container.streams.video)
    if not has_video:
        return (_check_metadata(path, keep_audio, probe(path).sei_user_data),
                CheckResult("decodes_cleanly", False, "the output holds no video stream"))
    # The byte search holds no GIL: it runs on the other core while this thread scans and decodes.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="identifier-search") as searcher:
        strings = searcher.submit(_check_identifying_strings, path, identifiers)
        scan = _PacketScan(path, expected if mode == "changes" else None, sources)
        sample_checks = scan.run(cancel)
        decoding = _DecodeCheck(path, expected, progress, cancel)
        if ranges is None:
            decoding.decode_all()
        else:
            # Repeats of a re-encoded group proven by packet identity with a decoded instance are not decoded
            # again.
            decoding.decode_ranges(_without(ranges, [(r.first_output, r.first_output + r.count)
                                                     for r in scan.repeats]))
            if mode == "splices":
                decoding.decode_keyframes()
        checks = [_check_metadata(path, keep_audio, scan.sei_user_data), strings.result(), *sample_checks,
                  *decoding.results(scan.packets, scan.repeats)]
    if expected.audio_samples is not None:
        checks.append(_check_audio(path, expected))
    return tuple(checks)


def _without(ranges: tuple[tuple[int, int], ...],
             holes: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``ranges`` (sorted, disjoint [start, end) pairs) with the frames of ``holes`` taken out."""
    kept = list(ranges)
    for hole_start, hole_end in holes:
        kept = [piece for start, end in kept
                for piece in ((start, min(end, hole_start)), (max(start, hole_end), end)) if piece[0] < piece[1]]
    return tuple(kept)


def _check_metadata(path: Path, keep_audio: bool, sei: tuple[SeiUserData, ...]) -> CheckResult:
    """Tags, streams, chapters and MP4 times from a probe, SEI user data as found by the packet scan."""
    info = probe(path, scan_packets=False)
    problems = []
    extra_tags = [k for k, _ in info.tags if k not in ALLOWED_CONTAINER_TAGS]
    if extra_tags:
        problems.append(f"container tags not allowed: {', '.join(extra_tags)}")
    kinds = [s.kind for s in info.streams]
    allowed_kinds = {"video", "audio"} if keep_audio else {"video"}
    if kinds.count("video") != 1:
        problems.append(f"{kinds.count('video')} video streams (expected 1)")
    if any(k not in allowed_kinds for k in kinds) or (keep_audio and kinds.count("audio") > 1):
        problems.append(f"streams not allowed: {', '.join(k for k in kinds if k not in allowed_kinds)}")
    for stream in info.streams:
        for key, value in stream.tags:
            if key not in ALLOWED_STREAM_TAGS:
                problems.append(f"stream {stream.index} tag not allowed: {key}")
            elif key == "handler_name" and value not in GENERIC_HANDLER_NAMES:
                problems.append(f"stream {stream.index} handler name is not generic: {value!r}")
            elif key == "language" and value not in ALLOWED_LANGUAGES:
                problems.append(f"stream {stream.index} language is set: {value!r}")
    if info.chapters:
        problems.append(f"{len(info.chapters)} chapters")
    nonzero = [t.path for t in info.mp4_times if t.creation or t.modification]
    if nonzero:
        problems.append(f"creation/modification times set in {', '.join(nonzero)}")
    if not info.mp4_times:
        problems.append("no mvhd/tkhd/mdhd boxes found: not an MP4 we wrote")
    if sei:
        problems.append(f"{len(sei)} SEI user-data payloads")
    detail = "; ".join(problems) if problems else (
        f"tags {sorted(k for k, _ in info.tags)}; streams {kinds}; times zero; no chapters; no SEI user data")
    return CheckResult("metadata_allow_list", not problems, detail)


def _check_identifying_strings(path: Path, identifiers: tuple[str, ...]) -> CheckResult:
    # Identifiers come from file names, which may hold bytes that are not UTF-8 (Python keeps them as
    # surrogates): os.fsencode gives back the bytes as they are on disk, so any name can be searched.
    needles = sorted({os.fsencode(i) for i in identifiers if len(os.fsencode(i)) >= MIN_SEARCHABLE_IDENTIFIER})
    patterns = [*needles, *(literal for literal, _ in ENCODER_SIGNATURES)]
    found_needles: set[bytes] = set()
    signatures: set[str] = set()
    # One Aho-Corasick pass (ahocorasick_rs: compiled, without the GIL) over the file mapped into memory: no
    # copies, no seams, and the verifier's other checks run meanwhile (verify_output).
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                for number, start, end in BytesAhoCorasick(patterns).find_matches_as_indexes(view, overlapping=True):
                    if number < len(needles):
                        found_needles.add(needles[number])
                        continue
                    tail = ENCODER_SIGNATURES[number - len(needles)][1]
                    following = re.match(tail, view[end:end + SIGNATURE_TAIL_BYTES])
                    if following is not None:
                        signatures.add((view[start:end] + following.group(0)).decode("latin-1"))
    if found_needles or signatures:
        # The identifiers themselves are not repeated here: this text goes into logs and reports.
        return CheckResult("no_identifying_strings", False,
                           f"{len(found_needles)} case identifier(s) and the encoder signature(s) "
                           f"{sorted(signatures) or 'none'} found in the file bytes")
    return CheckResult("no_identifying_strings", True,
                       f"searched for {len(needles)} identifier(s) and {len(ENCODER_SIGNATURES)} signatures")


def _type_ranges(types: frozenset[int]) -> str:
    """1, 5, 7-8 style list of NAL unit types."""
    ordered = sorted(types)
    spans: list[list[int]] = []
    for kind in ordered:
        if spans and kind == spans[-1][1] + 1:
            spans[-1][1] = kind
        else:
            spans.append([kind, kind])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _count_packets(path: Path, options: dict[str, str]) -> int:
    with open_input(path, options) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in iter_video_packets(container, stream))


class _PacketScan:
    """The one demux pass over the output's video packets that every packet-level check shares: hidden
    samples, sample framing, SEI user data, the bitstream allow-list and, in mode "changes", packet
    identity (``copied_packets``)."""

    def __init__(self, path: Path, copied: RenderResult | None, sources: tuple[Path, ...] | None) -> None:
        self.path, self.copied, self.sources = path, copied, sources
        self.packets = 0
        self.sei_user_data: tuple[SeiUserData, ...] = ()
        #: Repeated groups proven by packet identity with a decoded instance (mode "changes").
        self.repeats: tuple[RepeatedRun, ...] = ()

    def run(self, cancel: Cancel | None) -> list[CheckResult]:
        sei: dict[tuple[int, str, str], SeiUserData] = {}
        with open_input(self.path) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            extradata = bytes(stream.codec_context.extradata or b"")
            length_size = nal_length_size(extradata, codec)
            identity = PacketIdentity(self.copied, codec, extradata, stream_time_base(stream, self.path), self.path,
                                      self.sources) if self.copied is not None else None
            shown = 0
            misframed = 0
            #: NAL units outside the bitstream allow-list, by type.
            outside: dict[int, int] = {}
            for number, packet in enumerate(iter_video_packets(container, stream)):
                self.packets += 1
                if number % 256 == 0:
                    check_cancelled(cancel)
                shown += not packet.is_discard
                data = bytes(packet)
                if codec in ALLOWED_NAL_TYPES:
                    if not is_length_prefixed(data, length_size or 0):
                        misframed += 1
                    for unit in disallowed_units(data, codec, length_size):
                        outside[nal_type(unit, codec)] = outside.get(nal_type(unit, codec), 0) + 1
                    for unit in split_nal_units(data, length_size):
                        if is_sei(unit, codec) and len(sei) < MAX_SEI_RECORDS:
                            for item in sei_user_data(unit, codec):
                                sei.setdefault((item.payload_type, item.uuid, item.text), item)
                if identity is not None:
                    identity.check(number, packet, data, length_size)
        self.sei_user_data = tuple(sei.values())
        # Every sample the file stores, edit lists ignored: the MP4 sample table, else a second demux.
        tables = isobmff.video_sample_counts(self.path)
        stored = tables[0] if len(tables) == 1 else _count_packets(self.path, {"ignore_editlist": "1"})
        results = []
        if stored != shown:
            results.append(CheckResult("no_hidden_samples", False, f"{stored} samples stored but {shown} displayed: "
                                       f"{stored - shown} hidden by an edit list"))
        else:
            results.append(CheckResult("no_hidden_samples", True, f"{stored} samples stored, {shown} displayed"))
        if codec in ("h264", "hevc"):
            results.append(CheckResult(
                "sample_framing", misframed == 0 and length_size is not None,
                f"{misframed} of {shown} samples are not length-prefixed NAL units"
                if misframed or length_size is None
                else f"all {shown} samples are length-prefixed NAL units ({length_size}-byte lengths)"))
        results.append(_allow_list_result(codec, extradata, outside, shown))
        if identity is not None:
            results.append(CheckResult("copied_packets", *identity.result(shown)))
            self.repeats = identity.proven_repeats
        return results


def _allow_list_result(codec: str, extradata: bytes, outside: dict[int, int], samples: int) -> CheckResult:
    """``bitstream_allow_list``: the samples' NAL units outside the allow-list (counted by the packet scan)
    and the parameter-set record, which must hold parameter sets only, with nothing after them.  A sample
    hidden by an edit list is not scanned, but then ``no_hidden_samples`` fails."""
    if codec not in ALLOWED_NAL_TYPES:
        # Only H.264/HEVC are ever copied; other codecs are written by our own encoder (re-encode).
        return CheckResult("bitstream_allow_list", True,
                           f"not applicable: {codec} is only written by re-encoding, never copied")
    problems = []
    record = record_units(extradata, codec)
    bad_record = sorted({nal_type(u, codec) for u in disallowed_record_units(extradata, codec)})
    if bad_record:
        problems.append(f"NAL unit types {bad_record} in the {'avcC' if codec == 'h264' else 'hvcC'} record")
    if record.leftover_bytes:
        problems.append(f"{record.leftover_bytes} bytes after the parameter sets of the record")
    if outside:
        problems.append(f"{sum(outside.values())} NAL units outside the allow-list in the samples (types "
                        + ", ".join(f"{kind}: {count}" for kind, count in sorted(outside.items())) + ")")
    return CheckResult("bitstream_allow_list", not problems, "; ".join(problems) if problems else
                       f"{samples} samples and {len(record.units)} parameter sets hold only NAL unit types "
                       f"{_type_ranges(ALLOWED_NAL_TYPES[codec])}")


#: AAC spreads a transition over about one frame (1024 samples): silence is checked this far inside.
AUDIO_EDGE_SAMPLES = 2048
SILENCE_MAX = 1e-3


def _check_audio(path: Path, expected: RenderResult) -> CheckResult:
    """The audio track decodes, lasts as long as the video, and is silent where the video is redacted."""
    loud: list[tuple[int, int]] = []
    position = 0
    try:
        with open_input(path) as container:
            if len(container.streams.audio) != 1:
                return CheckResult("audio", False, f"{len(container.streams.audio)} audio streams, expected 1")
            inner = [(a + AUDIO_EDGE_SAMPLES, b - AUDIO_EDGE_SAMPLES) for a, b in expected.audio_silent
                     if b - a > 2 * AUDIO_EDGE_SAMPLES]
            for frame in container.decode(container.streams.audio[0]):
                samples = frame.to_ndarray()
                count = samples.shape[-1]
                for a, b in inner:
                    lo, hi = max(a, position), min(b, position + count)
                    if lo < hi and float(np.abs(samples[..., lo - position:hi - position]).max()) > SILENCE_MAX:
                        loud.append((a, b))
                position += count
    except av.error.FFmpegError as exc:
        return CheckResult("audio", False, f"audio does not decode: {exc}")
    assert expected.audio_samples is not None
    length_ok = abs(position - expected.audio_samples) <= AUDIO_EDGE_SAMPLES
    problems = []
    if not length_ok:
        problems.append(f"{position} samples decoded, {expected.audio_samples} expected")
    if loud:
        problems.append(f"{len(set(loud))} redacted stretches are not silent")
    return CheckResult("audio", not problems, "; ".join(problems) if problems else
                       f"{position} samples; {len(expected.audio_silent)} redacted stretches silent")


class _FrameChecker:
    """Checks decoded output frames against what the renderer promised for them."""

    def __init__(self, expected: RenderResult) -> None:
        self.black = set(expected.black_frames)
        self.blurred = expected.blurred_frames
        self.bad_black: list[int] = []
        self.bad_blur: list[int] = []
        self.seen: set[int] = set()
        #: Frames counted as seen because their repeat's reference frame was decoded (:meth:`inherit`).
        self.inherited = 0
        self.geometry = expected.geometry
        #: Decoded frames whose pixel shape, colour description or rotation differ from the promised ones.
        self.bad_geometry: dict[str, int] = {}

    def check(self, index: int, frame: av.VideoFrame, sar: Fraction | None = None) -> None:
        self.seen.add(index)
        if self.geometry is not None:
            self._check_geometry(frame, sar)
        if index in self.black and int(luma_plane(frame).max()) > BLACK_LUMA_MAX:
            self.bad_black.append(index)
        elif index in self.blurred:
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            if detail_energy(frame) > BLUR_MAX_DETAIL_RATIO * self.blurred[index] + 0.5:
                self.bad_blur.append(index)

    def _check_geometry(self, frame: av.VideoFrame, sar: Fraction | None) -> None:
        expected = self.geometry
        assert expected is not None
        found = {"pixel shape": sar if sar and sar != 1 else None, "rotation": int(round(frame.rotation or 0)),
                 "colour primaries": frame.color_primaries, "transfer": frame.color_trc,
                 "matrix": frame.colorspace, "range": frame.color_range or LIMITED_RANGE}
        # An unspecified range is limited range for YUV (encoders omit the flag when it says so).
        wanted = {"pixel shape": expected.sample_aspect_ratio, "rotation": expected.rotation,
                  "colour primaries": expected.color_primaries, "transfer": expected.color_trc,
                  "matrix": expected.colorspace, "range": expected.color_range or LIMITED_RANGE}
        for name, value in found.items():
            if value != wanted[name]:
                self.bad_geometry[name] = self.bad_geometry.get(name, 0) + 1

    def geometry_result(self) -> CheckResult:
        if self.geometry is None:
            return CheckResult("geometry", True, "the renderer promised no geometry (nothing to compare)")
        if self.bad_geometry:
            return CheckResult("geometry", False, "decoded frames differ from the source's " + ", ".join(
                f"{name} ({count} frames)" for name, count in self.bad_geometry.items()))
        return CheckResult("geometry", True, f"{len(self.seen) - self.inherited} decoded frames show the source's "
                           f"pixel shape, colour description and rotation ({self.geometry.to_json()})")

    def inherit(self, repeats: tuple[RepeatedRun, ...]) -> int:
        """Frames of proven repeats take their decoded reference frame's result (the same bytes decode to the
        same picture): a black one is checked when its reference is a checked black frame.  A blurred frame is
        never inherited (its threshold is its own source's).  Returns the frames inherited."""
        black = set(self.bad_black)
        inherited = 0
        for run in repeats:
            for k in range(run.count):
                frame, reference = run.first_output + k, run.reference + k
                if reference not in self.seen or frame in self.blurred:
                    continue
                if frame in self.black:
                    if reference not in self.black:
                        continue                  # the reference was not checked for black
                    if reference in black:
                        self.bad_black.append(frame)
                self.seen.add(frame)
                inherited += 1
        self.inherited += inherited
        return inherited

    def result(self, cut_frames: int) -> CheckResult:
        problems = []
        if self.bad_black:
            problems.append(f"{len(self.bad_black)} frames meant to be black are not (first: {self.bad_black[0]})")
        if self.bad_blur:
            problems.append(f"{len(self.bad_blur)} frames meant to be blurred keep detail "
                            f"(first: {self.bad_blur[0]})")
        unchecked = [i for i in (*self.black, *self.blurred) if i not in self.seen]
        if unchecked:
            problems.append(f"{len(unchecked)} redacted frames were not found in the output")
        return CheckResult(
            "redaction", not problems,
            "; ".join(problems) if problems else
            f"{len(self.black)} black frames have luma <= {BLACK_LUMA_MAX}; {len(self.blurred)} blurred frames "
            f"keep <= {BLUR_MAX_DETAIL_RATIO:.0%} of their detail; {cut_frames} frames cut")


def _open_for_checking(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    # "explode" turns every error the decoder detects (which it would otherwise conceal and log) into
    # an exception.  We do not capture FFmpeg's log instead: a Python log callback called from FFmpeg's
    # decoder threads can deadlock against the GIL while the decoder is freed.
    stream.codec_context.options = {"err_detect": "explode"}
    return stream


class _DecodeCheck:
    """Decodes the output (all of it, or frame ranges) and checks every decoded frame; :meth:`results` gives
    ``decodes_cleanly``, ``frame_count``, ``duration``, ``redaction`` and ``geometry``."""

    def __init__(self, path: Path, expected: RenderResult, progress: Progress | None, cancel: Cancel | None) -> None:
        self.path, self.expected, self.progress, self.cancel = path, expected, progress, cancel
        self.checker = _FrameChecker(expected)
        self.errors: list[str] = []
        #: Frames decoded (every frame when decoding all), ranges decoded, keyframes decoded (None: not asked).
        self.decoded = 0
        self.ranges = 0
        self.keys: int | None = None
        self.all = False
        self.duration: float | None = None

    def decode_all(self) -> None:
        self.all = True
        with open_input(self.path) as container:
            stream = self._open(container)
            sar = stream.sample_aspect_ratio
            try:
                for frame in container.decode(stream):
                    check_cancelled(self.cancel)
                    # The pixel shape of a codec without one in its bitstream (AV1) is the container's.
                    self.checker.check(self.decoded, frame, stream.codec_context.sample_aspect_ratio or sar)
                    self.decoded += 1
                    if self.progress is not None:
                        self.progress(min(self.decoded, self.expected.frame_count), self.expected.frame_count)
            except av.error.FFmpegError as exc:
                self.errors.append(f"after frame {self.decoded}: {exc}")

    def decode_ranges(self, ranges: tuple[tuple[int, int], ...]) -> None:
        """Decode output frames [start, end) of each range, from the keyframe at or before its start."""
        self.ranges += len(ranges)
        with open_input(self.path) as container:
            stream = self._open(container)
            sar = stream.sample_aspect_ratio
            rate = self.expected.frame_rate
            time_base = stream_time_base(stream, self.path)
            work = sum(b - a for a, b in ranges) or 1
            done = 0
            for start, end in ranges:
                # Seek to the keyframe at or before the range and decode up to its end.
                container.seek(int(Fraction(start) / rate / time_base), stream=stream, backward=True)
                stream.codec_context.flush_buffers()
                try:
                    for frame in container.decode(stream):
                        check_cancelled(self.cancel)
                        if frame.pts is None:
                            self.errors.append(f"in frames [{start}, {end}): a decoded frame carries no timestamp")
                            break
                        index = round(frame.pts * time_base * rate)
                        if index >= end:
                            break
                        if index >= start:
                            self.checker.check(index, frame, stream.codec_context.sample_aspect_ratio or sar)
                            done += 1
                            if self.progress is not None:
                                self.progress(min(done, work), work)
                except av.error.FFmpegError as exc:
                    self.errors.append(f"in frames [{start}, {end}): {exc}")
            self.decoded += done

    def decode_keyframes(self) -> None:
        """Every keyframe decodes: the copied groups' entry points and their parameter sets."""
        with open_input(self.path) as container:
            stream = self._open(container)
            stream.codec_context.skip_frame = "NONKEY"
            self.keys = 0
            try:
                for _ in container.decode(stream):
                    check_cancelled(self.cancel)
                    self.keys += 1
            except av.error.FFmpegError as exc:
                self.errors.append(f"keyframe {self.keys}: {exc}")

    def _open(self, container: av.container.InputContainer) -> av.video.stream.VideoStream:
        stream = _open_for_checking(container)
        self.duration = (float(stream.duration * stream.time_base)
                         if stream.duration is not None and stream.time_base else None)
        return stream

    def results(self, packets: int, repeats: tuple[RepeatedRun, ...] = ()) -> list[CheckResult]:
        """The checks, once decoding is done.  ``packets``: the output's packet count (the frame count when not
        every frame was decoded); ``repeats``: proven repeats of decoded groups, not decoded themselves (their
        frames take their reference frames' results)."""
        expected = self.expected
        if self.all:
            count = self.decoded
            decoded = f"{count} frames decoded"
        else:
            count = packets
            decoded = f"{self.decoded} frames decoded in {self.ranges} spliced or sampled ranges, {count} packets"
            if repeats:
                decoded += (f", {self.checker.inherit(repeats)} frames of {len(repeats)} repeated groups proven "
                            "equal to decoded ones")
        if self.keys is not None:
            decoded += f", {self.keys} keyframes decoded"
        errors = self.errors
        results = [CheckResult("decodes_cleanly", not errors,
                               decoded + (f"; errors: {'; '.join(errors[:5])}" if errors else ""))]
        results.append(CheckResult("frame_count", count == expected.frame_count,
                                   f"{count} frames in the file, {expected.frame_count} expected"))
        expected_seconds = Fraction(expected.frame_count) / expected.frame_rate
        tolerance = 1.5 / float(expected.frame_rate)
        duration = self.duration
        duration_ok = duration is not None and abs(duration - float(expected_seconds)) <= tolerance
        results.append(CheckResult("duration", duration_ok,
                                   f"{duration if duration is not None else 'unknown'} s in the file, "
                                   f"{float(expected_seconds):.3f} s expected"))
        results.append(self.checker.result(expected.cut_frames))
        results.append(self.checker.geometry_result())
        return results
