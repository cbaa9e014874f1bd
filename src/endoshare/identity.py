"""Pseudonyms and the private mapping file (patient ID → pseudonym).

A pseudonym is a random UUID4 (122 random bits from the OS CSPRNG), never derived from the patient ID,
so that nobody can recompute it.  The mapping is a CSV in the archive folder, mode 0600, changed only
under an inter-process file lock: a new row is appended with one write and an fsync; a row that
replaces an earlier one for the same case and pseudonym (re-processing) is written by rewriting the
file to a temporary name and renaming it over the old one.  Either way a reader sees the old file or
the new one, never half a row.

Spreadsheet safety: a field that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) is written with a leading apostrophe, the spreadsheet's own
"this is text" mark; so is a field that itself starts with an apostrophe.  :class:`MappingStore` removes
exactly one leading apostrophe when it reads a field back, so every value round-trips unchanged.

One case at a time: :class:`CaseLock` is an OS file lock per case ID in the archive (``locks/``), held
by whichever run processes the case, so that two runs never give one case two pseudonyms.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import CaseBusyError, DiskFullError, MappingError, OutputError
from .storage import append_private, full_folder_error, private_dir, remove_stale, write_atomically

MAPPING_FILE_NAME = "mapping.csv"
LOCK_TIMEOUT_SECONDS = 60
LOCKS_FOLDER = "locks"
#: Detection results (for review) in the archive, one JSON file per pseudonym.
DETECTIONS_FOLDER = "detections"
#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TEXT_MARK = "'"


def protect_cell(value: str) -> str:
    """``value`` as written to the mapping: a leading apostrophe if a spreadsheet could run it."""
    return TEXT_MARK + value if value.startswith((*FORMULA_STARTS, TEXT_MARK)) else value


def unprotect_cell(value: str) -> str:
    """The inverse of :func:`protect_cell`."""
    return value[1:] if value.startswith(TEXT_MARK) else value


def new_pseudonym() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class MappingRow:
    case_id: str
    pseudonym: str
    created_utc: str
    source_files: str      # clip file names joined with " | "
    output_sha256: str
    output_file: str


HEADER = tuple(f.name for f in fields(MappingRow))


class MappingStore:
    """The mapping CSV of one archive folder.  Safe to use from many processes at once."""

    def __init__(self, archive_dir: Path) -> None:
        self.path = Path(archive_dir) / MAPPING_FILE_NAME
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS, mode=0o600)

    def rows(self) -> list[MappingRow]:
        with self._locked():
            return self._read()

    def lookup(self, case_id: str) -> str | None:
        """The most recent pseudonym recorded for ``case_id``, if any."""
        matches = [r for r in self.rows() if r.case_id == case_id]
        return matches[-1].pseudonym if matches else None

    def record(self, row: MappingRow) -> MappingRow | None:
        """Add ``row``, or replace the row of the same case and pseudonym; returns the replaced row, if any
        (for :meth:`withdraw`)."""
        with self._locked():
            existing = self._read()
            previous = next((r for r in existing if (r.case_id, r.pseudonym) == (row.case_id, row.pseudonym)),
                            None)
            if previous is not None:
                self._rewrite([row if (r.case_id, r.pseudonym) == (row.case_id, row.pseudonym) else r
                               for r in existing])
            else:
                self._append(row, write_header=not existing and not self._has_header())
            return previous

    def withdraw(self, row: MappingRow, previous: MappingRow | None) -> None:
        """Undo :meth:`record` when the output it points to could not be published: put ``previous`` back,
        or drop ``row``."""
        with self._locked():
            existing = self._read()
            if previous is not None:
                updated = [previous if r == row else r for r in existing]
            else:
                updated = [r for r in existing if r != row]
            if updated != existing:
                self._rewrite(updated)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.path.parent)
        try:
            self._lock.acquire()
        except Timeout:
            raise MappingError(f"{self.path} is locked by another Endoshare process for more than "
                               f"{LOCK_TIMEOUT_SECONDS} s; wait for it to finish or remove a stale "
                               f"{self.path.name}.lock left by a crashed machine.", path=self.path) from None
        except OSError as exc:
            raise MappingError(f"Cannot use the archive folder {self.path.parent} ({exc.strerror}); "
                               "choose a writable archive folder.", path=self.path.parent) from None
        try:
            yield
        finally:
            self._lock.release()

    def _has_header(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def _read(self) -> list[MappingRow]:
        try:
            # No newline translation ("\r" is data); names that are not UTF-8 come back as their bytes.
            text = self.path.read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise MappingError(f"Cannot read the mapping file {self.path} ({exc}); restore it from a backup.",
                               path=self.path) from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != HEADER:
            raise MappingError(f"{self.path} does not start with the expected header {','.join(HEADER)}; "
                               "it is not an Endoshare mapping file or it was edited by hand.", path=self.path)
        rows = []
        for number, values in enumerate(reader, start=2):
            if len(values) != len(HEADER):
                raise MappingError(f"{self.path} line {number} has {len(values)} fields instead of "
                                   f"{len(HEADER)}; restore the file from a backup.", path=self.path)
            rows.append(MappingRow(*(unprotect_cell(v) for v in values)))
        return rows

    @staticmethod
    def _encode(rows: list[tuple[str, ...]], header: bool = False) -> bytes:
        buffer = io.StringIO(newline="")
        if header:
            csv.writer(buffer, lineterminator="\n").writerow(HEADER)
        # Every value quoted: a carriage return inside a value (a hostile folder name) must not end the row.
        csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(
            tuple(protect_cell(v) for v in row) for row in rows)
        # File names that are not UTF-8 (surrogates in Python) are written back as their bytes on disk.
        return buffer.getvalue().encode("utf-8", "surrogateescape")

    def _append(self, row: MappingRow, write_header: bool) -> None:
        data = self._encode([astuple(row)], header=write_header)
        try:
            append_private(self.path, data)   # never half a row
        except OSError as exc:
            raise (full_folder_error(exc, self.path.parent, f"adding a row to {self.path.name}")
                   or MappingError(f"Cannot write the mapping file {self.path} ({exc.strerror or exc}); check "
                                   "that the archive folder is writable.", path=self.path)) from None

    def _rewrite(self, rows: list[MappingRow]) -> None:
        remove_stale(self.path.parent)
        try:
            write_atomically(self.path, self._encode([astuple(r) for r in rows], header=True))
        except DiskFullError:
            raise
        except OutputError as exc:
            raise MappingError(str(exc), path=self.path) from None


class CaseLock:
    """The lock of one case ID in an archive: held while a run processes the case, released by the OS if
    the run dies (even by kill -9).  Not re-entrant: a second holder in the same process is refused too."""

    def __init__(self, archive_dir: Path, case_id: str) -> None:
        self.archive_dir = Path(archive_dir)
        self.case_id = case_id
        digest = hashlib.sha256(case_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.path = self.archive_dir / LOCKS_FOLDER / f"case-{digest}.lock"
        self._lock = FileLock(str(self.path), timeout=0, mode=0o600, thread_local=False)

    def acquire(self) -> None:
        private_dir(self.path.parent)
        try:
            self._lock.acquire()
        except Timeout:
            raise CaseBusyError(
                f"Case {self.case_id} is being processed by another Endoshare run on the archive "
                f"{self.archive_dir}; it was not started again, so that the case keeps one pseudonym and one "
                "output. Wait for the other run to finish (see 'endoshare queue status'); process the case "
                "again afterwards only if it must be redone.", path=self.archive_dir) from None
        except OSError as exc:
            raise (full_folder_error(exc, self.path.parent, "locking a case")
                   or OutputError(f"Cannot lock case {self.case_id} in the archive folder {self.archive_dir} "
                                  f"({exc.strerror or exc}); check that it is writable.",
                                  path=self.archive_dir)) from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    @property
    def held(self) -> bool:
        return bool(self._lock.is_locked)

    def busy_elsewhere(self) -> bool:
        """True if another holder has the case now (tries the lock and gives it back at once)."""
        try:
            self.acquire()
        except CaseBusyError:
            return True
        self.release()
        return False

    def __enter__(self) -> CaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
