"""Files and directories private to the lab's user: directories 0700, files 0600.

The data directory holds the lab key (unless ``Lab(key_file=...)`` keeps it elsewhere), the
secrets sealed under it and every device's data, so nothing in it may be readable by other
users of the machine, whatever the process umask (commonly 0022, which gives
0755 directories and 0644 files). The umask itself is never changed: it is process-wide, and
changing it for a moment races with every other thread that creates files.

- A directory the lab creates is created 0700 (:func:`private_dir`), missing parents too.
- A directory that already exists is the user's: its mode is not changed.
  :func:`report_open_dir` logs a WARNING if group or others have any permission on it, naming it,
  its mode and the fix. This follows GnuPG, which warns about "unsafe permissions on homedir"
  (any group or other bit) and carries on; PostgreSQL refuses to start on such a data directory
  and OpenSSH refuses a private key file readable by others, which would break existing labs.
- A file the lab creates itself is created 0600 with ``os.open(..., 0o600)``
  (:func:`private_file`) before the library that uses it (SQLite) opens it. A file of the lab's
  own found with a looser mode (left by an older version) is set to 0600, with a WARNING.
- A file another library creates with the umask's mode (DuckDB's database and write-ahead log;
  DuckDB cannot be told a mode for them) is set to 0600 right after it appears
  (:func:`keep_private`). In between, the 0700 directory is what keeps other users out: they
  cannot reach the file, so they cannot open it before its mode is tightened (in a directory
  the user keeps open, despite the warning, they could for that moment).
- DuckDB's spill files (query work beyond its memory limit) live only while a query runs, in a
  directory of the store's own that it creates 0700 (``timeseries.duckdb.tmp``); they keep the
  umask's mode, behind that directory.

On systems without POSIX modes (Windows) these functions only create what is missing.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "keep_private",
    "private_dir",
    "private_file",
    "private_sqlite",
    "report_open_dir",
    "tighten",
    "write_private",
]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
"""Mode of the directories the lab creates: the owner only. [-]"""
PRIVATE_FILE_MODE = 0o600
"""Mode of the files the lab keeps: read and write for the owner only. [-]"""

_POSIX = os.name == "posix"
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> bool:
    """Create ``path`` and its missing parents with mode 0700; True if ``path`` was created.

    An existing directory is left as it is (see :func:`report_open_dir`).
    """
    missing: list[Path] = []
    for part in (path, *path.parents):
        if part.exists():
            break
        missing.append(part)
    for part in reversed(missing):
        try:
            part.mkdir(mode=PRIVATE_DIR_MODE)  # the umask can only remove bits
        except FileExistsError:
            if part is path:
                return False
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    return bool(missing)


def report_open_dir(path: Path, what: str = "data directory") -> bool:
    """Log a WARNING if group or others have any permission on the directory ``path``.

    The mode is not changed: the directory is the user's. Returns True if it warned.
    """
    if not _POSIX:
        return False
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & _OTHERS:
        return False
    log.warning(
        "the %s %s has mode %s: other users of this machine can reach the lab's registry "
        "(device secrets) and stored data in it; make it private with: chmod 700 %s",
        what,
        path,
        oct(mode),
        path,
    )
    return True


def private_file(path: Path) -> None:
    """Create the empty file ``path`` with mode 0600 if it is missing; set an existing one of
    looser mode to 0600 (with a WARNING naming its old mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)


def private_sqlite(path: Path) -> None:
    """Prepare the SQLite database file ``path`` before SQLite opens it: create it 0600 (see
    :func:`private_file`), and set a looser ``-wal``, ``-shm`` or ``-journal`` file of an older
    version to 0600. SQLite creates those with the database file's mode (its unix VFS copies
    the mode of the database file), so they are private from then on."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(path.with_name(path.name + suffix))


def tighten(path: Path) -> None:
    """Set the existing file ``path`` of looser mode to 0600, with a WARNING; nothing if it is
    missing or already private."""
    if not _POSIX:
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & _OTHERS:
        os.chmod(path, PRIVATE_FILE_MODE)
        log.warning(
            "%s had mode %s (readable by other users of this machine); set to %s",
            path,
            oct(mode),
            oct(PRIVATE_FILE_MODE),
        )


def keep_private(path: Path) -> None:
    """Set ``path``, just created by a library with the umask's mode, to 0600 (silently).

    One ``stat`` when the file is already private or missing.
    """
    if not _POSIX:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if mode & _OTHERS:
        os.chmod(path, PRIVATE_FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to the file ``path`` (mode 0600) atomically and durably: through a 0600
    temporary file beside it, synced, then renamed over ``path``, so that a reader (or the lab
    after a crash) sees the old content or the new."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
