"""Benchmark: fast mode against the reference tool's pipeline, the stream-copy floor, and advanced mode
against a plain FFmpeg transcode, all in one run on the same generated case.

Usage::

    python benchmarks/bench_render.py [--minutes 10] [--cache DIR] [--json RESULTS.json] [--keep]

The case (1080p25 H.264, three clips, four out-of-body spans; see ``make_case.py``) is generated once
and cached.  Every contender runs as child processes, measured the same way: wall-clock seconds from
the first start to the last exit, CPU seconds of the children (``RUSAGE_CHILDREN``, so that a busy
shared machine shows up as wall > CPU / cores), and the peak resident memory of the whole process
tree, sampled every 50 ms with psutil.

Contenders:

* **fast, true spans** — ``endoshare process CASE --detector none --segments truth.json`` (fast mode
  with the true out-of-body spans given: render + verify only), with the default verification
  (``changes``: copied groups proven by packet identity) and with ``--verify full``;
* **fast** — ``endoshare process CASE`` (fast mode, built-in detector, end to end, default verification);
* **fast, true spans, no overlay finding** — the same with ``--no-overlay-mask``: render and verification
  alone (the burned-in text finder runs before rendering on every case otherwise);
* **fast, MPEG-TS** — the same pictures remuxed into MPEG-TS clips (``-c copy -f mpegts``, as OR
  recorders write them), true spans given: it must be spliced like the MP4 case, at a similar cost;
* **baseline** — the reference tool's fast pipeline redone with the ffmpeg CLI: concat by copy, decode
  every frame into 1 fps 64x64 PNGs (what its detector reads), then spans rounded out to whole seconds
  (fixed from the truth file: no real detector, the same work), one ``-ss … -c copy`` cut per in-body
  span, one encoded black clip per out-of-body span, and the concat demuxer;
* **floor** — ``ffmpeg -c copy`` concat of the clips plus decoding their keyframes
  (``-skip_frame nokey``);
* **advanced** — ``endoshare process CASE --mode advanced --detector none --segments truth.json``
  against **ffmpeg** transcoding the concatenated clips with the same libx264 CRF and preset (no
  redaction filter: a plain transcode is the reference).

This is not a test; pytest does not collect it (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imageio_ffmpeg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_case import DEFAULT_CACHE, HEIGHT, RATE, WIDTH, CaseFiles, make_case

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
ENDOSHARE = [sys.executable, "-m", "endoshare"]
GIB = 1 << 30
POLL_SECONDS = 0.05


@dataclass
class Measurement:
    name: str
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    commands: int
    load_before: float
    timings_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    """Runs the commands of one contender in turn and accumulates its wall time, CPU and peak memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.load_before = os.getloadavg()[0]
        self.cpu_start = _cpu_children()
        self.started = time.perf_counter()
        self.peak = 0
        self.commands = 0

    def run(self, command: list[str], capture: bool = False) -> str:
        self.commands += 1
        # Output goes to files, not pipes: a child that fills a pipe nobody reads would stall.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = psutil.Popen(command, stdout=out if capture else subprocess.DEVNULL, stderr=err, text=True)
            while process.poll() is None:
                self.peak = max(self.peak, _tree_rss(process))
                time.sleep(POLL_SECONDS)
            out.seek(0)
            err.seek(0)
            if process.returncode != 0:
                raise RuntimeError(f"{self.name}: {' '.join(command)} exited with {process.returncode}:\n"
                                   f"{err.read()[-3000:]}")
            return out.read()

    def done(self, **extra: object) -> Measurement:
        return Measurement(self.name, time.perf_counter() - self.started, _cpu_children() - self.cpu_start,
                           self.peak, self.commands, self.load_before, **extra)  # type: ignore[arg-type]


def _ffmpeg(*args: str) -> list[str]:
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]


def _concat_list(path: Path, files: list[Path]) -> Path:
    # The concat demuxer's quoting: single quotes, a quote inside written as '\''.
    path.write_text("".join("file '" + str(f.resolve()).replace("'", "'\\''") + "'\n" for f in files),
                    encoding="utf-8")
    return path


def run_fast(case: CaseFiles, work: Path, verify: str | None, *, spans: bool = False,
             folder: Path | None = None, label: str = "", overlays: bool = True) -> tuple[Measurement, dict]:
    out, archive = work / "out", work / "archive"
    command = [*ENDOSHARE, "process", str(folder or case.folder), "--out", str(out), "--archive", str(archive),
               "--json"]
    if verify is not None:
        command += ["--verify", verify]
    if spans:
        command += ["--detector", "none", "--segments", str(case.truth)]
    if not overlays:
        command += ["--no-overlay-mask"]
    runner = Runner(f"fast{label}{', true spans' if spans else ''}{', no overlay finding' if not overlays else ''}"
                    f" (verify {verify or 'default'})")
    runner.run(command, capture=True)
    report = json.loads(next(out.glob("*.report.json")).read_text(encoding="utf-8"))
    return runner.done(timings_seconds=report.get("timings_seconds", {}),
                       notes=[f"output: {report['output']['method']}, {report['output']['frames']} frames",
                              *report["output"].get("notes", [])]), report


def run_advanced(case: CaseFiles, work: Path, crf: int, preset: str) -> tuple[Measurement, dict]:
    out, archive = work / "out", work / "archive"
    runner = Runner("advanced (segments file)")
    runner.run([*ENDOSHARE, "process", str(case.folder), "--out", str(out), "--archive", str(archive), "--json",
                "--mode", "advanced", "--detector", "none", "--segments", str(case.truth),
                "--codec", "h264", "--crf", str(crf), "--preset", preset], capture=True)
    report = json.loads(next(out.glob("*.report.json")).read_text(encoding="utf-8"))
    return runner.done(timings_seconds=report.get("timings_seconds", {}),
                       notes=[f"output: {report['output']['method']}, {report['output']['frames']} frames"]), report


def run_ffmpeg_transcode(case: CaseFiles, work: Path, crf: int, preset: str) -> Measurement:
    listing = _concat_list(work / "clips.txt", list(case.clips))
    runner = Runner(f"ffmpeg libx264 crf {crf} {preset}")
    runner.run(_ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0", "-an",
                       "-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p",
                       str(work / "transcoded.mp4")))
    return runner.done()


def ts_case(case: CaseFiles, root: Path) -> Path:
    """The case's clips remuxed into MPEG-TS (the same pictures, Annex B framing, as recorders write)."""
    folder = root / "ts-case"
    folder.mkdir(exist_ok=True)
    for clip in case.clips:
        target = folder / (clip.stem + ".ts")
        if not target.exists():
            subprocess.run(_ffmpeg("-i", str(clip), "-map", "0:v:0", "-c", "copy", "-f", "mpegts", str(target)),
                           check=True, capture_output=True)
    return folder


def run_floor(case: CaseFiles, work: Path) -> Measurement:
    listing = _concat_list(work / "clips.txt", list(case.clips))
    runner = Runner("floor (copy concat + keyframes)")
    runner.run(_ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0", "-c", "copy",
                       str(work / "concat.mp4")))
    for clip in case.clips:
        runner.run(_ffmpeg("-skip_frame", "nokey", "-i", str(clip), "-map", "0:v:0", "-f", "null", "-"))
    return runner.done()


def baseline_spans(case: CaseFiles) -> list[tuple[int, int, bool]]:
    """(start s, end s, out of body) pieces covering the case, the spans rounded out to whole seconds as a
    1 fps detector would find them."""
    seconds = math.ceil(case.total_frames / RATE)
    oob = [False] * seconds
    for a, b in case.oob_spans:
        for s in range(a // RATE, min(seconds, math.ceil(b / RATE))):
            oob[s] = True
    pieces: list[tuple[int, int, bool]] = []
    for s, flag in enumerate(oob):
        if pieces and pieces[-1][2] == flag:
            pieces[-1] = (pieces[-1][0], s + 1, flag)
        else:
            pieces.append((s, s + 1, flag))
    return pieces


def run_baseline(case: CaseFiles, work: Path) -> Measurement:
    runner = Runner("baseline (reference fast pipeline)")
    merged = work / "merged.mp4"
    runner.run(_ffmpeg("-f", "concat", "-safe", "0", "-i", str(_concat_list(work / "clips.txt", list(case.clips))),
                       "-map", "0:v:0", "-c", "copy", str(merged)))
    pngs = work / "png"
    pngs.mkdir()
    runner.run(_ffmpeg("-i", str(merged), "-vf", "fps=1,scale=64:64", str(pngs / "%06d.png")))
    sampled = len(list(pngs.glob("*.png")))
    parts: list[Path] = []
    for number, (start, end, out_of_body) in enumerate(baseline_spans(case)):
        part = work / f"part{number:03d}.mp4"
        if out_of_body:
            runner.run(_ffmpeg("-f", "lavfi", "-i", f"color=c=black:s={WIDTH}x{HEIGHT}:r={RATE}",
                               "-t", str(end - start), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(part)))
        else:
            runner.run(_ffmpeg("-ss", str(start), "-i", str(merged), "-t", str(end - start), "-map", "0:v:0",
                               "-c", "copy", str(part)))
        parts.append(part)
    runner.run(_ffmpeg("-f", "concat", "-safe", "0", "-i", str(_concat_list(work / "parts.txt", parts)),
                       "-c", "copy", str(work / "output.mp4")))
    return runner.done(notes=[f"{sampled} PNGs, {len(parts)} pieces"])


def detection_summary(case: CaseFiles, report: dict) -> str:
    spans = [(s["start_frame"], s["end_frame"]) for s in report["redaction"]["spans"]]
    def redacted(i: int) -> bool:
        return any(a <= i < b for a, b in spans)
    truth_frames = sorted({i for a, b in case.oob_spans for i in range(a, b)})
    covered = sum(1 for i in truth_frames if redacted(i))
    extra = report["redaction"]["frames"] - covered
    return (f"detection: {covered}/{len(truth_frames)} out-of-body frames redacted, {extra} in-body frames "
            f"redacted too; spans {spans}")


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
            "python": platform.python_version(),
            "ffmpeg_cli": subprocess.run([FFMPEG, "-version"], check=True, capture_output=True,
                                         text=True).stdout.split("\n")[0],
            "pyav": _pyav_versions()}


def _pyav_versions() -> str:
    import av
    return f"{av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the case (default 10)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where the case is kept ({DEFAULT_CACHE})")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the outputs (printed work folder)")
    parser.add_argument("--no-advanced", dest="advanced", action="store_false",
                        help="skip advanced mode and the ffmpeg transcode (the slowest part)")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default=None,
                        help="run only these comma-separated steps (floor, spans-changes, spans-full, "
                             "spans-no-overlays, ts, fast-end-to-end, baseline, advanced, ffmpeg); the ratios "
                             "that need a missing one are left out")
    args = parser.parse_args()

    from endoshare.render.common import EncodeSettings
    settings = EncodeSettings()
    crf, preset = settings.effective_crf, settings.preset

    case = make_case(args.minutes, args.cache, log=lambda m: print(m, file=sys.stderr, flush=True))
    duration = case.total_frames / RATE
    size = sum(c.stat().st_size for c in case.clips)
    help_text = subprocess.run([*ENDOSHARE, "process", "--help"], check=True, capture_output=True, text=True).stdout
    info = machine()
    print(f"case: {case.folder} — 3 clips, {case.total_frames} frames ({duration / 60:.1f} min) 1920x1080 25 fps, "
          f"{size / 1e6:.0f} MB ({size * 8 / duration / 1e6:.1f} Mbit/s); out-of-body spans {list(case.oob_spans)}")
    print(f"machine: {info}", flush=True)

    results: list[Measurement] = []

    def save(ratios: dict[str, float] | None = None) -> None:
        # Written after every contender too, so that an interrupted long run still leaves its figures.
        if args.json:
            args.json.write_text(json.dumps({
                "machine": info, "case": {"frames": case.total_frames, "seconds": duration, "bytes": size,
                                          "oob_spans": case.oob_spans},
                "encode": {"crf": crf, "preset": preset}, "complete": ratios is not None,
                "results": [asdict(m) for m in results], "ratios": ratios or {}}, indent=1) + "\n",
                encoding="utf-8")

    work_root = Path(tempfile.mkdtemp(prefix="endoshare-bench-render-", dir=args.cache))

    def step(name: str, work_fn):  # type: ignore[no-untyped-def]
        if args.only is not None and name not in args.only:
            return None
        work = work_root / name
        work.mkdir()
        try:
            outcome = work_fn(work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        measurement = outcome[0] if isinstance(outcome, tuple) else outcome
        results.append(measurement)
        save()
        print(f"  {measurement.name}: {measurement.seconds:.1f} s ({measurement.cpu_seconds:.1f} CPU-s, load "
              f"{measurement.load_before:.1f} at start), "
              f"peak {measurement.peak_rss_bytes / GIB:.2f} GiB"
              + (f", phases {measurement.timings_seconds}" if measurement.timings_seconds else "")
              + (f"; {'; '.join(measurement.notes)}" if measurement.notes else ""), flush=True)
        return outcome

    floor = step("floor", lambda w: run_floor(case, w))
    fast: dict[str, Measurement] = {}
    default = "changes" if "changes" in help_text else None
    for choice in dict.fromkeys([default, "full"]):
        outcome = step(f"spans-{choice or 'default'}", lambda w, c=choice: run_fast(case, w, c, spans=True))
        if outcome is not None:
            fast[f"true spans, verify {choice or 'default'}"] = outcome[0]
    # The same without the burned-in text finder (issue #13), which runs before rendering on every case:
    # what the render and its verification cost on their own.
    outcome = step("spans-no-overlays", lambda w: run_fast(case, w, default, spans=True, overlays=False))
    if outcome is not None:
        fast[f"true spans, verify {default or 'default'}, no overlay finding"] = outcome[0]
    ts_fast = ts_report = None
    if args.only is None or "ts" in args.only:
        ts_folder = ts_case(case, work_root)
        ts_fast, ts_report = step("ts", lambda w: run_fast(case, w, default, spans=True, folder=ts_folder,
                                                           label=" MPEG-TS"))
    outcome = step("fast-end-to-end", lambda w: run_fast(case, w, default))
    if outcome is not None:
        fast[f"end to end, verify {default or 'default'}"] = outcome[0]
        print("    " + detection_summary(case, outcome[1]), flush=True)
    baseline = step("baseline", lambda w: run_baseline(case, w))
    advanced = transcode = None
    if args.advanced:
        outcome = step("advanced", lambda w: run_advanced(case, w, crf, preset))
        advanced = outcome[0] if outcome is not None else None
        transcode = step("ffmpeg", lambda w: run_ffmpeg_transcode(case, w, crf, preset))
    if not args.keep:
        shutil.rmtree(work_root, ignore_errors=True)

    print(f"\n{'contender':52} {'seconds':>8} {'x realtime':>10} {'CPU-s':>8} {'peak GiB':>9}")
    for m in results:
        print(f"{m.name:52} {m.seconds:8.1f} {duration / m.seconds:10.1f} {m.cpu_seconds:8.1f} "
              f"{m.peak_rss_bytes / GIB:9.2f}")
    ratios: dict[str, float] = {}
    print("\nratios (goal in brackets):")
    for key, m in fast.items():
        spans_given = key.startswith("true spans")
        if baseline is not None:
            ratios[f"baseline/fast[{key}]"] = baseline.seconds / m.seconds
            ratios[f"cpu baseline/fast[{key}]"] = baseline.cpu_seconds / m.cpu_seconds
            print(f"  fast [{key}] vs baseline: {baseline.seconds / m.seconds:.2f}x faster"
                  f"{'' if spans_given else ' (goal >= 5)'}; CPU time: {baseline.cpu_seconds / m.cpu_seconds:.2f}x")
        if floor is not None:
            ratios[f"fast[{key}]/floor"] = m.seconds / floor.seconds
            ratios[f"cpu fast[{key}]/floor"] = m.cpu_seconds / floor.cpu_seconds
            print(f"  fast [{key}] vs floor: {m.seconds / floor.seconds:.2f}x the floor's time "
                  f"(goal <= {2 if spans_given else 3}); CPU time: {m.cpu_seconds / floor.cpu_seconds:.2f}x")
    mp4 = fast.get(f"true spans, verify {default or 'default'}")
    if ts_fast is not None and ts_report is not None and mp4 is not None:
        ratios["ts/mp4"] = ts_fast.seconds / mp4.seconds
        ratios["cpu ts/mp4"] = ts_fast.cpu_seconds / mp4.cpu_seconds
        print(f"  MPEG-TS vs MP4 (same pictures, true spans): {ts_fast.seconds / mp4.seconds:.2f}x (goal <= 1.5); "
              f"CPU time: {ts_fast.cpu_seconds / mp4.cpu_seconds:.2f}x; TS output method: "
              f"{ts_report['output']['method']}")
    if advanced is not None and transcode is not None:
        ratios["advanced/ffmpeg"] = advanced.seconds / transcode.seconds
        ratios["cpu advanced/ffmpeg"] = advanced.cpu_seconds / transcode.cpu_seconds
        print(f"  advanced vs ffmpeg: {advanced.seconds / transcode.seconds:.2f}x (goal <= 1.15); "
              f"CPU time: {advanced.cpu_seconds / transcode.cpu_seconds:.2f}x")
        render = advanced.timings_seconds.get("render")
        if render:
            ratios["advanced_render/ffmpeg"] = render / transcode.seconds
            print(f"  advanced render phase alone vs ffmpeg: {render / transcode.seconds:.2f}x")
    worst = max(results, key=lambda m: m.peak_rss_bytes)
    print(f"  peak memory: highest {worst.peak_rss_bytes / GIB:.2f} GiB ({worst.name}) (goal < 1.5)")
    save(ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
