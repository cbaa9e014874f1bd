"""--keep-audio: the audio follows the redaction (silenced or cut with the video); by default it is dropped."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from endoshare.pipeline import CaseRequest, ProcessOptions, process_case
from endoshare.render.common import Redaction
from media import barcode_clip, ffmpeg

SPANS = [(20, 40), (90, 110)]     # the second one crosses the clip join at 100


def clip_with_tone(folder: Path, name: str, frames: range, frequency: int) -> None:
    video = barcode_clip(folder.parent / f"video-{name}", frames)
    seconds = len(frames) / 25
    ffmpeg("-i", video, "-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate=44100",
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", folder / name)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio") / "case"
    folder.mkdir()
    clip_with_tone(folder, "a.mp4", range(0, 100), 440)
    clip_with_tone(folder, "b.mp4", range(100, 200), 660)
    return folder


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=-1)


def run(tmp_path: Path, case: Path, redaction: Redaction, keep_audio: bool = True) -> tuple[Path, dict]:
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps({"segments": [{"start_frame": a, "end_frame": b} for a, b in SPANS]}))
    result = process_case(CaseRequest(case), ProcessOptions(
        out_dir=tmp_path / "shared", archive_dir=tmp_path / "archive", detector="none", segments_file=segments,
        redaction=redaction, keep_audio=keep_audio))
    return result.output, json.loads(result.report.read_text())


def rms(samples: np.ndarray, start_s: float, end_s: float) -> float:
    window = samples[..., int(start_s * 48000):int(end_s * 48000)]
    return float(np.sqrt(np.mean(window ** 2)))


def test_audio_is_silenced_where_the_video_is_redacted(tmp_path: Path, case: Path) -> None:
    output, report = run(tmp_path, case, Redaction.BLACK)
    assert next(c for c in report["checks"] if c["name"] == "audio")["passed"]
    audio = decoded_audio(output)
    assert audio.shape[-1] == pytest.approx(8 * 48000, abs=2048)
    for a, b in SPANS:                                  # redacted: silent (inside AAC's transition)
        assert rms(audio, a / 25 + 0.05, b / 25 - 0.05) < 1e-3
    for start, end in ((0.1, 0.7), (2.0, 3.5), (4.5, 7.9)):   # kept: the tone is there
        assert rms(audio, start, end) > 0.05


def test_cut_removes_the_audio_with_the_video(tmp_path: Path, case: Path) -> None:
    output, report = run(tmp_path, case, Redaction.CUT)
    audio = decoded_audio(output)
    kept_seconds = (200 - 40) / 25
    assert audio.shape[-1] == pytest.approx(kept_seconds * 48000, abs=2048)
    assert all(c["passed"] for c in report["checks"])


def test_audio_is_dropped_by_default(tmp_path: Path, case: Path) -> None:
    output, _ = run(tmp_path, case, Redaction.BLACK, keep_audio=False)
    with av.open(str(output)) as container:
        assert [s.type for s in container.streams] == ["video"]
