"""Work off the GUI thread: core calls run in a QThreadPool and report back through Qt signals.

Signals emitted from a pool thread are queued to the receiver's (GUI) thread, so views are only ever
touched from the GUI thread and the window keeps responding while a case runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..errors import EndoshareError

_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def plain(message: str) -> str:
    """A core or library message without the numeric error codes people cannot use ("[Errno 1094995529]")."""
    return _ERRNO.sub("", message)


class TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Task(QRunnable):
    """``fn()`` in a pool thread; its value arrives as ``done``, a typed core error's text as ``failed``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.setAutoDelete(False)    # Python owns it (see TaskRunner), so its signals outlive run()
        self.fn = fn
        self.signals = TaskSignals()

    def run(self) -> None:
        try:
            value = self.fn()
        except Exception as exc:
            # waiting for this task would wait forever.  Core errors already read as user messages.
            self.signals.failed.emit(plain(str(exc)) if isinstance(exc, (EndoshareError, OSError, ValueError))
                                     else f"Unexpected error: {exc!r}; please report it.")
        else:
            self.signals.done.emit(value)


class TaskRunner(QObject):
    """Keeps each running :class:`Task` referenced until it reported, and its pool."""

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool(self)
        self._running: set[Task] = set()

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
            on_failed: Callable[[str], None]) -> Task:
        task = Task(fn)
        self._running.add(task)
        task.signals.done.connect(on_done)
        task.signals.failed.connect(on_failed)
        task.signals.done.connect(lambda _value, t=task: self._running.discard(t))
        task.signals.failed.connect(lambda _text, t=task: self._running.discard(t))
        self.pool.start(task)
        return task

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def wait(self, msecs: int = -1) -> bool:
        return self.pool.waitForDone(msecs)
