"""Work off the GUI thread: core calls run in a QThreadPool and report back through Qt signals.

Signals emitted from a pool thread are queued to the receiver's (GUI) thread, so views are only ever
touched from the GUI thread and the window keeps responding while a case runs.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..errors import CancelledError, EndoshareError
from ..pipeline import CaseRequest, CaseResult, ProcessOptions, ProgressEvent, process_case


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
            self.signals.failed.emit(str(exc) if isinstance(exc, (EndoshareError, OSError, ValueError))
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


class CaseSignals(QObject):
    #: entry id, fraction of the whole case 0..1, phase name
    progress = Signal(str, float, str)
    finished = Signal(str, object)       # entry id, CaseResult
    failed = Signal(str, str, str)       # entry id, message, error type
    cancelled = Signal(str)


class CaseRun(QRunnable):
    """One :func:`process_case` call; :meth:`cancel` is honoured at the core's next poll."""

    def __init__(self, entry_id: str, request: CaseRequest, options: ProcessOptions) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.entry_id = entry_id
        self.request = request
        self.options = options
        self.signals = CaseSignals()
        self._cancel = threading.Event()
        self._last_percent = -1

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _progress(self, event: ProgressEvent) -> None:
        # Whole percents are enough for a person and keep the GUI's event queue short.
        percent = int(event.fraction * 100)
        if percent != self._last_percent:
            self._last_percent = percent
            self.signals.progress.emit(self.entry_id, event.fraction, event.phase)

    def run(self) -> None:
        try:
            result: CaseResult = process_case(self.request, self.options, self._progress, self._cancel.is_set)
        except CancelledError:
            self.signals.cancelled.emit(self.entry_id)
        except EndoshareError as exc:
            self.signals.failed.emit(self.entry_id, str(exc), type(exc).__name__)
        except OSError as exc:
            self.signals.failed.emit(self.entry_id, f"{self.request.folder}: {exc}", type(exc).__name__)
        except Exception as exc:
            # case "running" forever with no word to the user, so it becomes a failed case with details.
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.signals.failed.emit(self.entry_id, f"Unexpected error in case {self.request.folder}: {detail}. "
                                     "Please report this with the case's clips' details.", type(exc).__name__)
        else:
            self.signals.finished.emit(self.entry_id, result)
