"""The ``copied_packets`` check: stream-copied output packets proven equal to their source packets.

A renderer that stream-copies reports :class:`~endoshare.render.common.CopiedRun` records (which output
packets are which source packets), and one that writes a re-encoded group more than once (the black
groups) :class:`~endoshare.render.common.RepeatedRun` records (which output packets repeat which).
:class:`PacketIdentity` is fed every output packet in decode order, re-reads the claimed source packets,
and requires of each copied one the source's picture slices byte for byte (the source as the bitstream
allow-list leaves it: units the scrubber drops are not expected); of a repeated one, that it equals its
reference packet (see :class:`PacketIdentity`); of every other packet, that it lies in a range the
verifier decodes.  Why this proves as much as decoding the copied and
repeated groups is argued in the README ("How much is decoded").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .media.nal import (
    H264_IDR,
    H264_PPS,
    H264_SPS,
    HEVC_IDR_TYPES,
    HEVC_PPS,
    HEVC_SPS,
    HEVC_VPS,
    RECORD_TYPES,
    AvcConfig,
    allowed_unit,
    hvcc_parameter_sets,
    nal_length_size,
    nal_type,
    read_ue,
    split_nal_units,
    unit_allowed,
)
from .media.probe import iter_video_packets, open_input, stream_time_base
from .render.common import CopiedRun, RenderResult, RepeatedRun


def _vcl(unit: bytes, codec: str) -> bool:
    """A NAL unit that carries picture data (a slice)."""
    kind = nal_type(unit, codec)
    return 1 <= kind <= 5 if codec == "h264" else 0 <= kind <= 31


def _parameter_set_kind(unit: bytes, codec: str) -> int | None:
    kind = nal_type(unit, codec)
    return kind if kind in ((H264_SPS, H264_PPS) if codec == "h264" else (HEVC_VPS, HEVC_SPS, HEVC_PPS)) else None


def _starts_group(unit: bytes, codec: str) -> bool:
    """An IDR slice: nothing decoded before it is referenced after it."""
    return nal_type(unit, codec) in ((H264_IDR,) if codec == "h264" else HEVC_IDR_TYPES)


def _parameter_sets(extradata: bytes, codec: str) -> tuple[bytes, ...]:
    """The parameter sets of a track's record that the bitstream allow-list keeps."""
    if not extradata:
        return ()
    if nal_length_size(extradata, codec) is None:          # Annex B extradata
        found: tuple[bytes, ...] = tuple(split_nal_units(extradata, None))
    elif codec == "h264":
        config = AvcConfig.parse(extradata)
        found = (*config.sps, *config.pps)
    else:
        found = hvcc_parameter_sets(extradata)
    return tuple(u for u in found if unit_allowed(u, codec, RECORD_TYPES[codec]))


def _allowed_units(data: bytes, codec: str, length_size: int | None) -> list[bytes]:
    """A source packet's NAL units as the bitstream scrubber leaves them (the allow-list applied)."""
    kept = (allowed_unit(u, codec) for u in split_nal_units(data, length_size))
    return [u for u in kept if u is not None]


def _parameter_set_id(unit: bytes, codec: str) -> tuple[int, int]:
    """(NAL type, id) of a parameter set; H.264 SPS/PPS ids are read, HEVC ids are taken as 0 (in-band
    HEVC parameter sets replace each other in decode order, which the splice decode proves)."""
    kind = nal_type(unit, codec)
    if codec != "h264":
        return kind, 0
    rbsp = unit.replace(b"\0\0\3", b"\0\0")
    return kind, read_ue(rbsp, 32 if kind == H264_SPS else 8)[0]


class _SourceCursor:
    """Packets of the copied runs' source files, read forward (each source demuxed once when runs go forward)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.container: av.container.InputContainer | None = None
        self.packets: Iterator[av.Packet] = iter(())
        self.position = 0
        self.codec = ""
        self.length_size: int | None = None
        self.parameter_sets: tuple[bytes, ...] = ()
        self.time_base = Fraction(1)
        self.reorders = False

    def seek(self, run: CopiedRun) -> None:
        if run.source != self.path or run.first_packet < self.position:
            self.close()
            self.container = open_input(run.source)
            stream = next(s for s in self.container.streams.video if s.index == run.stream_index)
            self.path, self.position = run.source, 0
            self.packets = iter_video_packets(self.container, stream)
            self.codec = stream.codec_context.name
            extradata = bytes(stream.codec_context.extradata or b"")
            self.length_size = nal_length_size(extradata, self.codec)
            self.parameter_sets = _parameter_sets(extradata, self.codec)
            self.time_base = stream_time_base(stream, run.source)
            self.reorders = bool(stream.codec_context.has_b_frames)
        while self.position < run.first_packet:
            next(self.packets)
            self.position += 1

    def next(self) -> av.Packet:
        self.position += 1
        return next(self.packets)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


@dataclass(frozen=True)
class _Seen:
    """What the repeat proof keeps of one output packet."""

    digest: bytes
    keyframe: bool
    #: Output frame it is shown at.
    index: int
    #: It holds an IDR slice.
    idr: bool


def _inside(first: int, count: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    """[first, first + count) lies within one of ``ranges``."""
    return any(a <= first and first + count <= b for a, b in ranges)


def _overlaps(first: int, count: int, runs: tuple[RepeatedRun, ...]) -> bool:
    return any(first < r.first_output + r.count and r.first_output < first + count for r in runs)


class PacketIdentity:
    """Proves the renderer's copied runs (``copied_packets``): each such output packet holds its source
    packet's picture slices byte for byte, in order, with nothing added but the source's own parameter sets
    and nothing dropped but units that carry no picture data; it is shown at the source's presentation time
    moved by the run's shift, keeps its keyframe flag, and each run starts with an IDR picture or continues
    the source right where the previous run stopped.  Every other packet must lie in a decoded range; every
    output frame index is shown exactly once and decoding timestamps rise strictly.

    Repeated runs (H.264): each packet of a repeat equals its reference packet byte for byte (SHA-256) with
    the same keyframe flag; both are shown in decode order (packet ``p`` at frame ``p``); the reference starts
    with an IDR picture, lies in a decoded range and in no repeat; and no parameter set id of the track
    means two things (record and in-band units alike), so both decode with the same parameter sets.  A proven
    repeat (:attr:`proven_repeats`) need not be decoded: it decodes to its reference's pictures.  A claim whose
    bytes or times differ fails the check; HEVC claims are not used (its in-band parameter sets reuse ids,
    so the repeats are decoded like any re-encoded group)."""

    def __init__(self, expected: RenderResult, codec: str, extradata: bytes, time_base: Fraction, output: Path,
                 sources: tuple[Path, ...] | None) -> None:
        assert expected.copied_runs is not None and expected.check_ranges is not None
        allowed = {p.resolve() for p in sources} if sources is not None else None
        foreign = [r for r in expected.copied_runs if r.source.resolve() == output.resolve()
                   or (allowed is not None and r.source.resolve() not in allowed)]
        self.expected, self.codec, self.time_base = expected, codec, time_base
        #: Output ticks to frame index (one product, not three per packet).
        self.frames_per_tick = time_base * expected.frame_rate
        self.runs = sorted(expected.copied_runs, key=lambda r: r.first_output)
        self.run_index = -1
        self.run: CopiedRun | None = None
        self.cursor = _SourceCursor()
        self.output_sets = _parameter_sets(extradata, codec)
        self.ranges = expected.check_ranges
        self.problems: list[str] = []
        if foreign:
            self.problems.append(f"{len(foreign)} copied runs name a file that is not one of the case's clips")
        self.copied = 0
        self.shown: set[int] = set()
        self.duplicates = 0
        self.last_dts: int | None = None
        self.bad_dts = 0
        self.undecoded = 0
        self.previous_run: CopiedRun | None = None
        self.repeats = tuple(expected.repeated_runs) if codec == "h264" else ()
        #: Packets a repeat proof reads (repeats and their references), and what it keeps of each.
        self.watched = {first + k for r in self.repeats for first in (r.first_output, r.reference)
                        for k in range(r.count)}
        self.seen: dict[int, _Seen] = {}
        #: Every parameter set of the track by (type, id): the record's and any sent in-band.
        self.meanings: dict[tuple[int, int], set[bytes]] = {}
        for unit in self.output_sets:
            self.meanings.setdefault(_parameter_set_id(unit, codec), set()).add(unit)
        #: Repeats proven by :meth:`result`.
        self.proven_repeats: tuple[RepeatedRun, ...] = ()

    def _problem(self, text: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(text)

    def _run_for(self, number: int) -> CopiedRun | None:
        while self.run_index + 1 < len(self.runs) and self.runs[self.run_index + 1].first_output <= number:
            self.run_index += 1
            self.previous_run, self.run = self.run, self.runs[self.run_index]
            self._start_run(self.run)
        run = self.run
        return run if run is not None and run.first_output <= number < run.first_output + run.count else None

    def _start_run(self, run: CopiedRun) -> None:
        continues = (self.previous_run is not None and self.previous_run.source == run.source
                     and self.previous_run.first_packet + self.previous_run.count == run.first_packet
                     and self.previous_run.first_output + self.previous_run.count == run.first_output)
        self.cursor.seek(run)
        self.run_continues = continues
        if run.frame_order and self.cursor.reorders:
            self._problem(f"{run.source.name}: timed by frame order although its pictures are reordered")
        missing = [u for u in self.cursor.parameter_sets if u not in self.output_sets]
        if missing:
            self._problem(f"{run.source.name}: {len(missing)} of its parameter sets are not in the output's record")
        ids: dict[tuple[int, int], set[bytes]] = {}
        for unit in (*self.output_sets, *self.cursor.parameter_sets):
            ids.setdefault(_parameter_set_id(unit, self.codec), set()).add(unit)
        if any(len(units) > 1 for units in ids.values()):
            self._problem(f"{run.source.name}: a parameter set id of the source means something else in the output")

    def check(self, number: int, packet: av.Packet, data: bytes, length_size: int | None) -> None:
        if packet.pts is None or packet.dts is None:
            self._problem(f"packet {number} has no timestamp")
            return
        if self.last_dts is not None and packet.dts <= self.last_dts or packet.dts > packet.pts:
            self.bad_dts += 1
        self.last_dts = packet.dts
        index = round(packet.pts * self.frames_per_tick)
        if index in self.shown or not 0 <= index < self.expected.frame_count:
            self.duplicates += 1
        self.shown.add(index)
        if self.codec == "h264" and self.repeats:
            self._watch(number, packet, data, length_size, index)
        run = self._run_for(number)
        if run is None:
            if not any(a <= index < b for a, b in self.ranges):
                self.undecoded += 1
            return
        source = self.cursor.next()
        problem = self._compare(number, run, packet, data, length_size, source)
        if problem:
            self._problem(f"output packet {number} (from {run.source.name} packet "
                          f"{run.first_packet + number - run.first_output}): {problem}")
        else:
            self.copied += 1

    def _watch(self, number: int, packet: av.Packet, data: bytes, length_size: int | None, index: int) -> None:
        """Keep what the repeat proof needs of this packet: its in-band parameter sets, and its digest when
        a repeat or a reference holds it."""
        units = list(split_nal_units(data, length_size))
        for unit in units:
            if _parameter_set_kind(unit, self.codec) is not None:
                self.meanings.setdefault(_parameter_set_id(unit, self.codec), set()).add(unit)
        if number in self.watched:
            self.seen[number] = _Seen(hashlib.sha256(data).digest(), bool(packet.is_keyframe), index,
                                      any(_starts_group(u, self.codec) for u in units))

    def _prove_repeats(self, problems: list[str]) -> None:
        """Check every repeat claim (see the class); the proven ones go to :attr:`proven_repeats`."""
        if not self.repeats:
            return
        if any(len(units) > 1 for units in self.meanings.values()):
            return                            # the same bytes may decode differently: decoded instead
        wrong: list[str] = []
        for run in self.repeats:
            pairs = [(self.seen.get(run.first_output + k), self.seen.get(run.reference + k)) for k in range(run.count)]
            if any(a is None or b is None for a, b in pairs):
                wrong.append(f"packets {run.first_output}+{run.count} or their reference are missing")
            elif any(a.digest != b.digest or a.keyframe != b.keyframe for a, b in pairs if a and b):
                wrong.append(f"packets {run.first_output}+{run.count} differ from packets {run.reference}+")
            elif any(a.index != run.first_output + k or b.index != run.reference + k
                     for k, (a, b) in enumerate(pairs) if a and b):
                wrong.append(f"packets {run.first_output}+{run.count} or their reference are not shown in decode "
                             "order")
            elif not (pairs[0][1] and pairs[0][1].idr):
                wrong.append(f"the reference of packets {run.first_output}+{run.count} does not start with an "
                             "IDR picture")
            elif not _inside(run.reference, run.count, self.ranges) or _overlaps(run.reference, run.count,
                                                                                  self.repeats):
                wrong.append(f"the reference of packets {run.first_output}+{run.count} is not in a decoded range")
        if wrong:
            problems.append(f"{len(wrong)} of {len(self.repeats)} repeated groups are not proven: {wrong[0]}")
        else:
            self.proven_repeats = self.repeats

    def _compare(self, number: int, run: CopiedRun, packet: av.Packet, data: bytes, length_size: int | None,
                 source: av.Packet) -> str | None:
        source_time: int | Fraction
        if run.frame_order:
            ticks = 1 / (self.expected.frame_rate * self.cursor.time_base)
            source_time = run.pts_shift + (run.first_packet + number - run.first_output) * ticks
        elif source.pts is None:
            return "the source packet has no timestamp"
        else:
            source_time = source.pts + run.pts_shift
        if packet.pts is None:
            return "the output packet has no timestamp"
        # Exact: integer cross products (source_time is a Fraction only when timed by frame order).
        mine, theirs = self.time_base, self.cursor.time_base
        if packet.pts * mine.numerator * theirs.denominator != source_time * theirs.numerator * mine.denominator:
            return "shown at the wrong time"
        if bool(packet.is_keyframe) != bool(source.is_keyframe):
            return "keyframe flag differs"
        out_units = list(split_nal_units(data, length_size))
        src_units = _allowed_units(bytes(source), self.codec, self.cursor.length_size)
        if number == run.first_output and not self.run_continues \
                and not any(_starts_group(u, self.codec) for u in out_units):
            return "a copied run does not start with an IDR picture"
        position = 0
        for unit in out_units:
            if _parameter_set_kind(unit, self.codec) is not None and unit in self.cursor.parameter_sets \
                    and unit not in src_units[position:]:
                continue                      # the source's own parameter sets, repeated in-band
            while position < len(src_units) and src_units[position] != unit:
                problem = self._dropped(src_units[position], "a picture slice differs from the source's")
                if problem:
                    return problem
                position += 1
            if position == len(src_units):
                return "holds a NAL unit the source packet does not have"
            position += 1
        for dropped in src_units[position:]:
            problem = self._dropped(dropped, "a picture slice of the source is missing")
            if problem:
                return problem
        if not any(_vcl(u, self.codec) for u in out_units):
            return "holds no picture"
        return None

    def _dropped(self, unit: bytes, slice_problem: str) -> str | None:
        """Why a source unit may not be missing from its copy (``slice_problem`` for picture data, or a
        parameter set the output's record lacks), or None."""
        if _vcl(unit, self.codec):
            return slice_problem
        if _parameter_set_kind(unit, self.codec) is not None and unit not in self.output_sets:
            return "a parameter set of the source was dropped"
        return None

    def result(self, packets: int) -> tuple[bool, str]:
        """(passed, detail) once every output packet was fed."""
        self.cursor.close()
        claimed = sum(r.count for r in self.runs)
        problems = list(self.problems)
        if self.run_index + 1 < len(self.runs) or (self.run is not None
                                                    and self.run.first_output + self.run.count > packets):
            problems.append("the output has fewer packets than the renderer copied")
        if self.undecoded:
            problems.append(f"{self.undecoded} packets are neither proven copied nor decoded")
        if self.duplicates or len(self.shown) != self.expected.frame_count:
            problems.append(f"{len(self.shown)} distinct frame times for {self.expected.frame_count} frames "
                            f"({self.duplicates} repeated or out of range)")
        if self.bad_dts:
            problems.append(f"{self.bad_dts} decoding timestamps do not rise or pass their presentation time")
        if not problems and self.copied != claimed:
            problems.append(f"only {self.copied} of {claimed} copied packets found")
        self._prove_repeats(problems)
        repeated = sum(r.count for r in self.proven_repeats)
        detail = "; ".join(problems) if problems else (
            f"{self.copied} of {packets} packets equal their scrubbed source packets (slices byte for byte, "
            f"timestamps as planned)"
            + (f"; {repeated} repeat a decoded re-encoded group byte for byte" if repeated else "")
            + f"; the other {packets - self.copied - repeated} lie in decoded ranges")
        return not problems, detail
