"""How the desktop app identifies itself: icon, log file, clean exit on SIGTERM, Help's versions and licences."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from PySide6.QtWidgets import QApplication

from endoshare import __version__
from endoshare.gui import desktop
from endoshare.gui import help as help_module


@pytest.fixture(scope="module")
def qapp() -> QApplication:
    return QApplication.instance() or QApplication([])  # type: ignore[return-value]


def test_icon_renders_the_drawing(qapp: QApplication) -> None:
    image = desktop.render_icon(64)
    assert (image.width(), image.height()) == (64, 64)
    corner, centre = image.pixelColor(0, 0), image.pixelColor(32, 24)
    assert corner.alpha() == 0                       # the rounded tile leaves the corners transparent
    assert centre.alpha() == 255 and centre.red() > centre.blue()   # tissue-coloured field of view
    assert not desktop.app_icon().isNull()


def test_log_file_goes_to_the_users_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert desktop.log_file() == tmp_path / "state" / "endoshare" / "endoshare-gui.log"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert desktop.log_file() == tmp_path / ".local" / "state" / "endoshare" / "endoshare-gui.log"


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_app_logs_its_start_and_closes_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The real ``endoshare-gui`` entry point: a log under XDG_STATE_HOME, exit status 0 after SIGTERM."""
    state = tmp_path / "state"
    settings = tmp_path / "settings.ini"
    log = state / "endoshare" / "endoshare-gui.log"
    script = textwrap.dedent("""
        import sys
        from endoshare.cli.gui import console_main
        sys.exit(console_main())
    """)
    env = {**os.environ, "XDG_STATE_HOME": str(state), "QT_QPA_PLATFORM": "offscreen"}
    process = subprocess.Popen([sys.executable, "-c", script, "--settings", str(settings)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):                      # up to 60 s for the window to show
            if process.poll() is not None or (log.is_file() and "Main window shown" in log.read_text()):
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    text = log.read_text(encoding="utf-8")
    assert f"Endoshare {__version__} started (Python package" in text
    assert "Received SIGTERM" in text and "Endoshare exited with status 0" in text


def test_help_lists_components_with_their_licences(qapp: QApplication) -> None:
    components = {c.name: c for c in help_module.bundled_components()}
    assert components["endoshare"].version == __version__ and components["endoshare"].licence == "MIT"
    ffmpeg = components["FFmpeg (inside PyAV)"]
    import av
    assert ffmpeg.version == av.ffmpeg_version_info and "GPL" in ffmpeg.licence   # as libavcodec reports it
    assert "--enable-libx264" in ffmpeg.note and "GPL-2.0-or-later: libx264" in ffmpeg.note
    assert any("Redistribution" in text for _, text in components["av"].texts)   # PyAV's BSD licence
    # Requirements are followed with the extras they ask for (dask[distributed]) and Endoshare's gui extra.
    assert {"numpy", "distributed", "PySide6_Essentials", "shiboken6"} <= set(components)
    assert not {"pytest", "tensorflow", "playwright"} & {name.lower() for name in components}
    page = help_module.about_html()
    assert str(desktop.log_file()) in page and "FFmpeg (inside PyAV)" in page and __version__ in page


def test_requirements_are_followed_by_extra() -> None:
    follow = help_module._followed
    assert follow('PySide6-Essentials<6.12,>=6.8; extra == "gui"', frozenset({"gui"})) == \
        ("PySide6-Essentials", frozenset())
    assert follow('pytest>=8; extra == "test"', frozenset({"gui"})) is None
    assert follow("dask[distributed]>=2024.1", frozenset()) == ("dask", frozenset({"distributed"}))
    assert follow("numpy>=1.26", frozenset()) == ("numpy", frozenset())


def test_uncaught_errors_are_logged_without_their_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = desktop.start_logging()
    message = "/cases/Jane Doe 1957-03-14 MRN4711/VID1.mp4 is gone"   # not on the traceback's source line
    try:
        try:
            raise FileNotFoundError(message)
        except FileNotFoundError as exc:
            desktop._log_uncaught(type(exc), exc, exc.__traceback__)
    finally:
        for handler in list(desktop.logger.handlers):
            handler.close()
            desktop.logger.removeHandler(handler)
    assert path is not None
    text = path.read_text(encoding="utf-8")
    assert "Uncaught builtins.FileNotFoundError" in text and "test_gui_desktop.py" in text
    assert "MRN4711" not in text and "Jane" not in text


def test_case_status_changes_are_logged_by_pseudonym_without_the_error(caplog: pytest.LogCaptureFixture) -> None:
    """Each status change is one log line naming the case by pseudonym (never the patient ID), and a failure
    says only that there is a reason, because the error text names the case's files."""
    from types import SimpleNamespace

    from endoshare.gui.queue_view import EntryStatus

    session = desktop.DesktopSession.__new__(desktop.DesktopSession)   # no QApplication, no log file
    session._statuses = {}
    job = SimpleNamespace(pseudonym=None, error=None, case_id="PATIENT-1234")
    entries: dict[str, SimpleNamespace] = {"7": SimpleNamespace(job=job, status=EntryStatus.WAITING)}
    session._queue_view = SimpleNamespace(entries=entries)  # type: ignore[assignment]
    with caplog.at_level("INFO", logger=desktop.APP_ID):
        session._entry_changed("7")
        session._entry_changed("7")                          # no change: no second line
        entries["7"] = SimpleNamespace(job=SimpleNamespace(pseudonym="ps-42", error="/cases/PATIENT-1234/a.mp4 "
                                                           "cannot be opened", case_id="PATIENT-1234"),
                                       status=EntryStatus.FAILED)
        session._entry_changed("7")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["Case entry 7: waiting", "Case pseudonym ps-42: failed (the reason is shown in the queue)"]
    assert not any("PATIENT" in line for line in lines)
