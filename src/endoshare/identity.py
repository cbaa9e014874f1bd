"""Pseudonyms and the private mapping file (patient ID → pseudonym).

A pseudonym is a random UUID4 (122 random bits from the OS CSPRNG), never derived from the patient ID,
so that nobody can recompute it.  The mapping is a CSV in the archive folder, mode 0600, changed only
under an inter-process file lock: a new row is appended with one write and an fsync; a row that
replaces an earlier one for the same case and pseudonym (re-processing) is written by rewriting the
file to a temporary name and renaming it over the old one.  Either way a reader sees the old file or
the new one, never half a row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import uuid
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import MappingError

MAPPING_FILE_NAME = "mapping.csv"
LOCK_TIMEOUT_SECONDS = 60


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
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)

    def rows(self) -> list[MappingRow]:
        with self._locked():
            return self._read()

    def lookup(self, case_id: str) -> str | None:
        """The most recent pseudonym recorded for ``case_id``, if any."""
        matches = [r for r in self.rows() if r.case_id == case_id]
        return matches[-1].pseudonym if matches else None

    def record(self, row: MappingRow) -> None:
        with self._locked():
            existing = self._read()
            if any(r.case_id == row.case_id and r.pseudonym == row.pseudonym for r in existing):
                updated = [row if (r.case_id, r.pseudonym) == (row.case_id, row.pseudonym) else r
                           for r in existing]
                self._rewrite(updated)
            else:
                self._append(row, write_header=not existing and not self._has_header())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
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
            rows.append(MappingRow(*values))
        return rows

    @staticmethod
    def _encode(rows: list[tuple[str, ...]]) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        # File names that are not UTF-8 (surrogates in Python) are written back as their bytes on disk.
        return buffer.getvalue().encode("utf-8", "surrogateescape")

    def _append(self, row: MappingRow, write_header: bool) -> None:
        data = self._encode(([HEADER] if write_header else []) + [astuple(row)])
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if os.write(fd, data) != len(data):
                raise MappingError(f"Short write to {self.path}; the disk may be full.", path=self.path)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, rows: list[MappingRow]) -> None:
        # We hold the lock: any temp file from an earlier rewrite belongs to a process that died.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        data = self._encode([HEADER, *(astuple(r) for r in rows)])
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
