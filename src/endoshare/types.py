"""The few types that every layer shares: progress and cancellation callbacks, and the exit codes.

Long work reports progress and polls for cancellation through two plain callables, so that the core
knows nothing of terminals, Qt or Dask:

- :data:`Progress` is called with ``(done, total)`` in units of measured work (frames decoded, packets
  written), never on a timer;
- :data:`Cancel` is polled between units of work; once it returns ``True`` the work stops with
  :class:`~endoshare.errors.CancelledError` (:func:`check_cancelled`) and nothing partial is published.

:class:`ExitCode` is what the command line returns (and the GUI's console entry point).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from .errors import CancelledError

#: ``progress(done, total)``: ``done`` of ``total`` units of measured work are finished.
Progress = Callable[[int, int], None]
#: ``cancel()``: ``True`` once the user asked to stop.
Cancel = Callable[[], bool]


def check_cancelled(cancel: Cancel | None) -> None:
    """Raise :class:`~endoshare.errors.CancelledError` if ``cancel`` says the user asked to stop."""
    if cancel is not None and cancel():
        raise CancelledError()


class ExitCode(IntEnum):
    """Exit status of ``endoshare`` and its sub-commands."""

    #: Every case (or file) succeeded.
    OK = 0
    #: At least one case failed; the others were processed (each failure is reported by name).
    SOME_FAILED = 1
    #: The command line could not be used as given (unknown option, missing file, bad settings).
    USAGE = 2
    #: Interrupted with Ctrl+C (128 + SIGINT): nothing partial was published.
    INTERRUPTED = 130
