"""Screenshots of every screen of the desktop app, taken from the real app under Xvfb.

    python tools/gui_screenshots.py [--out docs/screenshots]

Without a display it runs itself again under ``xvfb-run`` (Debian package ``xvfb``).  It writes a
synthetic sample case into a temporary folder, builds it in the case builder, runs it with the
built-in detector, opens the review, and saves one PNG per screen.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SCREEN = "1280x800x24"


def rerun_under_xvfb(argv: list[str]) -> int:
    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None:
        print("gui_screenshots: no display and no xvfb-run; install the Debian package xvfb.", file=sys.stderr)
        return 2
    env = {**os.environ, "ENDOSHARE_SCREENSHOTS_UNDER_XVFB": "1", "QT_QPA_PLATFORM": "xcb"}
    command = [xvfb_run, "-a", "-s", f"-screen 0 {SCREEN}", sys.executable, __file__, *argv]
    return subprocess.run(command, env=env, check=False).returncode


def take(out: Path) -> None:
    from PySide6.QtCore import QEventLoop, QSettings
    from PySide6.QtWidgets import QApplication, QWidget

    from endoshare.gui.app import MainWindow
    from endoshare.gui.settings import GuiSettings, save_settings
    from endoshare.sample import make_sample_case

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Endoshare")

    def wait_until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not reach the state to photograph in time")
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    def settle() -> None:
        # Let layouts and paint events run before grabbing.
        for _ in range(20):
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 10)

    def save(widget: QWidget, name: str) -> None:
        settle()
        path = out / name
        if not widget.grab().save(str(path)):
            raise OSError(f"could not write {path}")
        print(f"wrote {path}")

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="endoshare-screens-") as temp:
        root = Path(temp)
        sample = make_sample_case(root / "recordings", width=320, height=180)
        settings_file = root / "endoshare-gui.ini"
        for folder in ("archive", "shared"):
            (root / folder).mkdir()
        save_settings(QSettings(str(settings_file), QSettings.Format.IniFormat),
                      GuiSettings.of(root / "archive", root / "shared", detector="builtin"))
        window = MainWindow(settings_file)
        window.resize(1200, 760)
        window.show()

        dialog = window.settings_dialog()
        dialog.show_first_run()
        dialog.show()
        save(dialog, "settings.png")
        dialog.close()

        builder = window.builder
        builder.load_folder(sample.folder)
        builder.patient_id.setText("CASE-2024-0117")
        wait_until(lambda: not builder.busy and builder.clips.count() == 3)
        builder.clips.setCurrentRow(0)
        wait_until(lambda: builder.preview.pixmap() is not None and not builder.preview.pixmap().isNull())
        window.tabs.setCurrentWidget(builder)
        save(window, "case_builder.png")

        builder.confirm()
        window.queue.add_case("CASE-2024-0118", sample.folder, tuple(p.name for p in sample.clips))
        window.queue.start()
        wait_until(lambda: not window.queue.running, 120)
        later = window.queue.add_case("CASE-2024-0119", sample.folder, tuple(p.name for p in sample.clips))
        assert later is not None
        window.queue.select(next(iter(window.queue.entries)))
        window.tabs.setCurrentWidget(window.queue)
        save(window, "queue.png")

        first = next(iter(window.queue.entries.values()))
        window.open_review(first.entry_id)
        review = window.review
        wait_until(lambda: review.source is not None and len(review.timeline.thumbnails) > 0)
        if review.spans:
            span = review.spans.segments[min(1, len(review.spans) - 1)]
            review.select(span)
            review.show_frame(span.start_frame + span.length // 2)
            review.set_zoom(2)
        save(window, "review.png")

        window.tabs.setCurrentWidget(window.help)
        save(window, "help.png")
        window.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "screenshots")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("ENDOSHARE_SCREENSHOTS_UNDER_XVFB"):
        return rerun_under_xvfb(sys.argv[1:])
    take(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
