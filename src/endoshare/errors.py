"""The exception tree of Endoshare.

Every error the core raises derives from :class:`EndoshareError` *and* from the built-in exception a
caller would expect (``FileNotFoundError``, ``ValueError``, ``OSError``...), so that plain ``except
ValueError`` code keeps working.  Every message names the file concerned and says what to do about it.

::

    EndoshareError
    ├── MissingInputError (FileNotFoundError)  a case folder or clip does not exist
    ├── InputError (ValueError)              a case or clip cannot be used as given
    │   ├── NoVideoFilesError                a case folder holds no video file
    │   ├── EmptyFileError                   a clip is zero bytes long
    │   ├── UnreadableMediaError             not a media file, truncated (no moov), corrupt
    │   ├── NoVideoStreamError               e.g. an audio-only file
    │   ├── SegmentsFileError                a --segments file that is malformed or out of range
    │   └── OverlaysFileError                a file of overlay regions (a review's edit) that is malformed
    │                                        or does not fit the case's picture and length
    ├── OptionsError (ValueError)            processing options that cannot work together (e.g. the archive
    │                                        inside the shared folder, an unknown detector)
    ├── InputPermissionError (PermissionError)  a clip or folder cannot be read
    ├── OutputError (OSError)                the shared or archive folder cannot take the output
    │   └── DiskFullError                    no space left while writing
    ├── VerificationError (RuntimeError)     a written output failed a privacy or integrity check
    ├── WeightsError (ValueError)            a detector weights file is missing, truncated or mismatched
    ├── MappingError (OSError)               the pseudonym mapping file is unreadable or corrupt
    ├── CaseBusyError (RuntimeError)         another run is processing the same case ID right now
    └── CancelledError (RuntimeError)        the user cancelled; no partial output is left
"""

from __future__ import annotations

import os
from pathlib import Path


class EndoshareError(Exception):
    """Base class of every error Endoshare raises on purpose."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return self.message


class MissingInputError(EndoshareError, FileNotFoundError):
    """A case folder, clip or file named on the command line does not exist."""


class InputError(EndoshareError, ValueError):
    """A case folder or clip cannot be used as given."""


class NoVideoFilesError(InputError):
    pass


class EmptyFileError(InputError):
    pass


class UnreadableMediaError(InputError):
    pass


class NoVideoStreamError(InputError):
    pass


class SegmentsFileError(InputError):
    pass


class OverlaysFileError(InputError):
    """A file of overlay regions (a review's edit) cannot be read or does not fit the case's picture."""


class OptionsError(EndoshareError, ValueError):
    """Processing options that are invalid or cannot work together; nothing was queued or written."""


class InputPermissionError(EndoshareError, PermissionError):
    """A clip or a case folder cannot be read with the current user's rights."""


class OutputError(EndoshareError, OSError):
    """The output (shared) or archive folder cannot take what we must write."""


class DiskFullError(OutputError):
    pass


class VerificationError(EndoshareError, RuntimeError):
    """A freshly written output failed a check; it was deleted and not published."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 failed_checks: tuple[str, ...] = ()) -> None:
        super().__init__(message, path=path)
        self.failed_checks = failed_checks


class WeightsError(EndoshareError, ValueError):
    """A detector weights file is missing, truncated or does not match the model."""


class MappingError(EndoshareError, OSError):
    """The pseudonym mapping file cannot be read or written."""


class CaseBusyError(EndoshareError, RuntimeError):
    """Another run holds the lock of this case ID in the archive; this run left the case alone."""


class CancelledError(EndoshareError, RuntimeError):
    """Processing was cancelled by the user; nothing partial was published.

    Raised without a message it says just that (naming ``path`` when given); work that publishes nothing
    (a detection run, an evaluation) says what was not produced instead."""

    def __init__(self, message: str | None = None, *, path: str | os.PathLike[str] | None = None) -> None:
        if message is None:
            where = f" while processing {path}" if path is not None else ""
            message = f"Cancelled by the user{where}; nothing was published."
        super().__init__(message, path=path)
