"""Every file Endoshare writes: temporary names, atomic replacement, the permission policy, clean-up.

One owner for temporary files.  A temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under
a name with 64 random bits, in the folder of its final name, and renamed over the final name only when
complete (``os.replace`` never follows a symlink planted at the final name).  Its name records who made it::

    .endoshare-<owner>.<host tag>.<pid>.<random><suffix>

``owner`` says which program part made it and so how long the file may live: ``p`` (plain) files live as
long as the process that made them, and ``host tag`` (a short hash of the host name) and ``pid`` (the
writer's process id) let :func:`remove_stale` delete what a killed process of this machine left, and only
that: a file whose process still runs (or runs on another machine) is never touched.  A queue job's files
(owner ``q<queue token>-j<job>-a<attempt>``) outlive the worker process that rendered them (the coordinator
publishes them afterwards), so they are removed by their coordinator, or by the run that settles the job
after that coordinator died (:func:`remove_owned`).

The permission policy.  Everything in the archive folder is private to its owner whatever the umask:
folders ``0700`` (:func:`private_dir`), files ``0600`` (:func:`open_private`, :func:`write_atomically`
with the default mode).  Shared outputs (video and report) get ``0666`` filtered by the umask, like any file
the user makes (:func:`shared_file_mode`), so that colleagues can open them where the umask allows.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any

from .errors import DiskFullError, EndoshareError, OutputError

TEMP_PREFIX = ".endoshare-"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: Owner tag of temporary files made outside the queue.
PLAIN_OWNER = "p"
#: Errors that mean "this folder is full" (space or quota).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

_OWNER = re.compile(r"^[A-Za-z0-9_-]+$")
_TEMP = re.compile(r"^" + re.escape(TEMP_PREFIX)
                   + r"(?P<owner>[A-Za-z0-9_-]+)\.(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.[0-9a-f]{16}(?P<suffix>.*)$",
                   re.DOTALL)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def host_tag() -> str:
    """Eight hex digits standing for this machine in temporary names (host names may hold anything)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this machine (a reused id counts as alive: the safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True             # exists, another user's
    except OverflowError:
        return False
    return True


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)      # no /proc: the tightest value for the instant we look
    os.umask(mask)
    return mask


def shared_file_mode() -> int:
    """Mode of a published (shared) file: what ``open()`` would give any file of this user."""
    return 0o666 & ~current_umask()


def full_folder_error(exc: BaseException, folder: Path, doing: str) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``folder`` if ``exc`` means the disk or quota is full, else None."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return DiskFullError(f"The folder {folder} is full (no space left on its disk or quota) while {doing}; "
                             "free some space there and run again.", path=folder)
    return None


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a folder only its owner can enter: mode 0700, whatever the umask."""
    path = Path(path)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        if path.stat().st_uid == os.geteuid() and path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise (full_folder_error(exc, path.parent, f"creating {path.name}")
               or OutputError(f"Cannot create the private folder {path} ({exc.strerror or exc}); choose an "
                              "archive folder you own and may write to.", path=path)) from None
    return path


def make_private(path: Path) -> None:
    """Set an existing file of the archive to 0600 (files an older version or a library made)."""
    try:
        if not path.is_symlink() and path.exists() and path.stat().st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.chmod(path, PRIVATE_FILE_MODE)
    except OSError:
        pass                    # not ours: the 0700 folder still keeps others out


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a private file (0600 even if it existed with other bits); never follows a symlink."""
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                 PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to the private file ``path`` as one record: written whole and synced, or not at all
    (a short write, a full disk, is cut back off so that no half record stays).  Raises ``OSError``."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, data)
        if written != len(data):
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(owner: str, suffix: str) -> str:
    if not _OWNER.match(owner):
        raise ValueError(f"temporary file owner {owner!r} must be letters, digits, '-' or '_'")
    return f"{TEMP_PREFIX}{owner}.{host_tag()}.{os.getpid()}.{secrets.token_hex(8)}{suffix}"


def create_temp(directory: Path, suffix: str, owner: str = PLAIN_OWNER) -> tuple[int, Path]:
    """A new, empty, private (0600) temporary file in ``directory``, opened for writing: (fd, path).

    Exclusive creation under a random name: a file or symlink planted in advance is never opened.
    """
    directory = Path(directory)
    for _ in range(100):
        path = directory / temp_name(owner, suffix)
        try:
            fd = os.open(path, _CREATE_FLAGS, PRIVATE_FILE_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise (full_folder_error(exc, directory, "creating a temporary file")
                   or OutputError(f"Cannot create a file in the folder {directory} ({exc.strerror or exc}); "
                                  "check that it exists and that you may write to it.", path=directory)) from None
        return fd, path
    raise OutputError(f"Could not find a free temporary name in {directory}; remove the files starting with "
                      f"{TEMP_PREFIX} there and run again.", path=directory)


def new_temp_file(directory: Path, suffix: str, owner: str = PLAIN_OWNER) -> Path:
    """Like :func:`create_temp` but closed: for libraries that open the file by name themselves."""
    fd, path = create_temp(directory, suffix, owner)
    os.close(fd)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(temp: Path, final: Path, mode: int) -> None:
    """Give a complete temporary file its mode, then rename it over ``final`` (the commit point)."""
    os.chmod(temp, mode)
    os.replace(temp, final)
    _fsync_dir(final.parent)


def write_temp(directory: Path, suffix: str, data: bytes, owner: str = PLAIN_OWNER) -> Path:
    """``data`` in a new fsync'ed temporary file of ``directory`` (to :func:`publish` later)."""
    fd, temp = create_temp(directory, suffix, owner)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise (full_folder_error(exc, directory, f"writing {suffix.strip('.')}")
               or OutputError(f"Cannot write into the folder {directory} ({exc.strerror or exc}).",
                              path=directory)) from None
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def write_atomically(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE, owner: str = PLAIN_OWNER) -> None:
    """Replace ``path`` by ``data`` all at once: readers see the old file or the new one, never a mix."""
    path = Path(path)
    temp = write_temp(path.parent, f".{path.name}.tmp", data, owner)
    try:
        publish(temp, path, mode)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"Cannot replace {path} ({exc.strerror or exc}); check the folder's permissions.",
                          path=path) from None


def parse_temp(name: str) -> dict[str, str] | None:
    match = _TEMP.match(name)
    return match.groupdict() if match else None


def _temps(directory: Path) -> list[tuple[Path, dict[str, str]]]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found = []
    for entry in entries:
        fields = parse_temp(entry.name)
        if fields is not None:
            found.append((Path(entry.path), fields))
    return found


def remove_stale(directory: Path, owner: str = PLAIN_OWNER) -> list[Path]:
    """Delete the temporary files of ``owner`` in ``directory`` left by dead processes of this machine.

    Files of a live process, of another machine (whose processes we cannot see), of another owner and
    anything not named by :func:`temp_name` are left alone.  Returns the removed paths.
    """
    here = host_tag()
    removed = []
    for path, fields in _temps(directory):
        if fields["owner"] == owner and fields["host"] == here and not pid_alive(int(fields["pid"])):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                continue
            removed.append(path)
    return removed


def remove_owned(directory: Path, owner_prefix: str) -> list[Path]:
    """Delete every temporary file of ``directory`` whose owner tag starts with ``owner_prefix``, on any host.

    For the queue coordinator, which knows that no worker of that job attempt is running any more.
    """
    removed = []
    for path, fields in _temps(directory):
        if fields["owner"].startswith(owner_prefix):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_json_file(path: Path, what: str, *, error: type[EndoshareError], missing_fix: str, format_fix: str,
                   missing_error: type[EndoshareError] | None = None) -> Any:
    """The JSON content of a file the user gave (segments, overlay regions, truth labels).  A missing file
    raises ``missing_error`` (default ``error``) and an unreadable one ``error``, each naming the file as
    ``what`` and saying what to do (``missing_fix`` / ``format_fix``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise (missing_error or error)(f"{what} {path} does not exist; {missing_fix}", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what} {path} is not readable JSON ({exc}); {format_fix}", path=path) from None
