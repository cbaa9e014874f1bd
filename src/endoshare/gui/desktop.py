"""How the app presents itself to the desktop: name, icon, log file, and a clean exit on SIGTERM/Ctrl-C.

Only the GUI shell logs: the core library never logs or prints.  The log holds the app's own events
(start, exit, case status changes named by pseudonym, uncaught errors by type and code location) and
Qt's warnings as Qt words them.  The app writes no case ID, folder or file name of its own into it (an
error message may name the case's folder, so uncaught errors are logged without their message).  It
stays on this computer, in the user's state folder (``log_file()``).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import platform
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import (
    QByteArray,
    QMessageLogContext,
    QSocketNotifier,
    QTimer,
    QtMsgType,
    qInstallMessageHandler,
    qVersion,
)
from PySide6.QtGui import QGuiApplication, QIcon, QImage, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from .. import __version__
from .queue_view import QueueView

#: The desktop entry's name (``endoshare.desktop``), the log folder's name and the logger's name.
APP_ID = "endoshare"
LOG_FILE_NAME = "endoshare-gui.log"
LOG_MAX_BYTES = 1_000_000
LOG_BACKUPS = 2
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)

#: The app's icon, drawn for this project: an endoscope's round field of view with a redaction bar.
ICON_SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <defs>
    <linearGradient id="tile" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#1e88e5"/>
      <stop offset="1" stop-color="#0d47a1"/>
    </linearGradient>
    <radialGradient id="tissue" cx="0.42" cy="0.38" r="0.65">
      <stop offset="0" stop-color="#ffcdd2"/>
      <stop offset="0.55" stop-color="#e57373"/>
      <stop offset="1" stop-color="#8e2430"/>
    </radialGradient>
  </defs>
  <rect x="8" y="8" width="240" height="240" rx="44" fill="url(#tile)"/>
  <circle cx="128" cy="128" r="92" fill="#111318"/>
  <circle cx="128" cy="128" r="76" fill="url(#tissue)"/>
  <path d="M 70 96 C 100 80, 150 84, 184 104" stroke="#ffebee" stroke-width="7" fill="none"
        stroke-linecap="round" opacity="0.75"/>
  <rect x="44" y="146" width="168" height="40" rx="8" fill="#111318" stroke="#ffffff" stroke-width="6"/>
</svg>
"""

logger = logging.getLogger(APP_ID)


def render_icon(size: int) -> QImage:
    """The icon as a square ARGB image of ``size`` pixels (also used by the bundle build for PNG/ICO files)."""
    renderer = QSvgRenderer(QByteArray(ICON_SVG.encode("utf-8")))
    if not renderer.isValid():  # pragma: no cover - the SVG above is a constant
        raise ValueError("the built-in icon SVG does not parse")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    return image


def app_icon() -> QIcon:
    icon = QIcon()
    for size in ICON_SIZES:
        icon.addPixmap(QPixmap.fromImage(render_icon(size)))
    return icon


def log_dir() -> Path:
    """The user's state folder for Endoshare: where the desktop app writes its log."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "Endoshare" / "Logs"
    if sys.platform == "darwin":
        return home / "Library" / "Logs" / "Endoshare"
    state = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative value.
    return (Path(state) if os.path.isabs(state) else home / ".local" / "state") / APP_ID


def log_file() -> Path:
    return log_dir() / LOG_FILE_NAME


def start_logging() -> Path | None:
    """Send the ``endoshare`` logger to the rotating log file; ``None`` when it cannot be written.

    A log that cannot be written (a read-only home folder, say) must not stop the app: it then runs
    without one.
    """
    path = log_file()
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                                       encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    frozen = "bundle" if getattr(sys, "frozen", False) else "Python package"
    logger.info("Endoshare %s started (%s; Python %s; Qt %s; %s; pid %d)", __version__, frozen,
                platform.python_version(), qVersion(), platform.platform(), os.getpid())
    return path


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    # The type and where in the code, not the message: a message may name the patient's folder.  The
    # whole traceback still goes to standard error, as without this hook.
    where = "".join(traceback.format_list(traceback.extract_tb(tb))).rstrip()
    logger.error("Uncaught %s.%s (message not logged: it may name a case's files)\n%s", kind.__module__,
                 kind.__qualname__, where)
    sys.__excepthook__(kind, value, tb)


_QT_LEVELS = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}


def _log_qt_message(kind: QtMsgType, context: QMessageLogContext, message: str) -> None:
    logger.log(_QT_LEVELS.get(kind, logging.WARNING), "Qt: %s", message)
    if kind != QtMsgType.QtDebugMsg:
        print(message, file=sys.stderr)


class SignalQuitter:
    """SIGTERM (logout, ``kill``) and Ctrl-C close the windows as the close button does.

    Python runs a signal handler only when the interpreter gets control, which Qt's event loop does not
    give it: the handler's wake-up byte goes through a socket pair that a ``QSocketNotifier`` watches.
    """

    def __init__(self, app: QApplication, on_signal: Callable[[], None]) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._on_signal = on_signal
        self._notifier = QSocketNotifier(self._read.fileno(), QSocketNotifier.Type.Read, app)
        self._notifier.activated.connect(self._received)
        signal.set_wakeup_fd(self._write.fileno())
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: None)   # the wake-up byte does the work

    def _received(self) -> None:
        try:
            numbers = self._read.recv(64)
        except BlockingIOError:
            return
        logger.info("Received %s: closing the windows", ", ".join(signal.Signals(n).name for n in numbers))
        self._on_signal()


class DesktopSession:
    """Everything the app sets up once at start, before its main window exists."""

    def __init__(self, app: QApplication) -> None:
        app.setApplicationName("Endoshare")
        app.setApplicationDisplayName("Endoshare")
        app.setOrganizationName("Endoshare")
        app.setApplicationVersion(__version__)
        QGuiApplication.setDesktopFileName(APP_ID)   # matches endoshare.desktop (Wayland, task bars)
        app.setWindowIcon(app_icon())
        self.log_path = start_logging()
        if self.log_path is not None:
            sys.excepthook = _log_uncaught
            qInstallMessageHandler(_log_qt_message)
        self._quitter = SignalQuitter(app, app.closeAllWindows) if os.name == "posix" else None
        self._statuses: dict[str, str] = {}
        self._queue_view: QueueView | None = None

    def watch(self, queue_view: QueueView) -> None:
        """Log each case's status changes (by pseudonym once it has one; never the patient ID)."""
        self._queue_view = queue_view
        queue_view.entry_changed.connect(self._entry_changed)
        # Runs once the event loop turns, after the window is shown (the start-up time in the log).
        QTimer.singleShot(0, lambda: logger.info("Main window shown"))

    def _entry_changed(self, entry_id: str) -> None:
        entry = self._queue_view.entries.get(entry_id) if self._queue_view is not None else None
        if entry is None or self._statuses.get(entry_id) == entry.status:
            return
        self._statuses[entry_id] = entry.status
        # The error text names the case's files, so the log says only that there is one.
        name = f"pseudonym {entry.job.pseudonym}" if entry.job.pseudonym else f"entry {entry_id[:8]}"
        if entry.job.error:
            logger.warning("Case %s: %s (the reason is shown in the queue)", name, entry.status)
        else:
            logger.info("Case %s: %s", name, entry.status)

    def close(self, exit_code: int) -> None:
        logger.info("Endoshare exited with status %d", exit_code)
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
