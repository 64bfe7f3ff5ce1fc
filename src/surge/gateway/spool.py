"""Temporary files for bodies larger than the memory a request may take.

Request bodies read before a proxied request takes a target slot, and proxied responses
read as fast as the target sends them, stay in memory up to a limit; the rest goes to a
``TempFile`` in ``DATA_DIR/tmp`` (nginx's client_body_temp_path and proxy_temp_path). A
file is opened with ``O_TMPFILE``: it never has a name, so it is gone once closed, and
nothing is left behind by a crash, kill -9 included. Where the file system has no
``O_TMPFILE`` it is created and unlinked at once; ``prepare_temp_dir`` removes what a crash
in that instant could leave.

Creating and deleting a file costs about 100 µs of CPU on ext4, against a few µs to empty
one: ``TempFiles`` keeps a few emptied files open for the next requests. An emptied file
holds no data and no disk blocks (``ftruncate``), and reads stop at what this request
wrote, so nothing of a request can reach another.

Writes and reads are plain system calls on the event loop, as nginx's are: they go to the
page cache, and a request body is at most ``max_body_size``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from surge.gateway.errors import TempFileError

TEMP_DIR_NAME = "tmp"
_PREFIX = "surge-body-"
LEFTOVER_AGE = 60.0  # a named temp file older than this was left by a crash
KEEP_IDLE = 16  # emptied files a process keeps open for reuse


class TempFiles:
    """The temporary files of one directory, for one process."""

    def __init__(self, directory: str, keep_idle: int = KEEP_IDLE) -> None:
        self.directory = directory
        self.keep_idle = keep_idle
        self.idle: list[int] = []  # descriptors of emptied files

    def new(self) -> TempFile:
        fd = self.idle.pop() if self.idle else _open_unnamed(self.directory)
        return TempFile(self, fd)

    def give_back(self, fd: int) -> None:
        if len(self.idle) < self.keep_idle:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            else:
                self.idle.append(fd)
                return
        os.close(fd)

    def close(self) -> None:
        while self.idle:
            os.close(self.idle.pop())


class TempFile:
    """An unnamed file that bytes are appended to and read back from at any offset."""

    __slots__ = ("fd", "owner", "size")

    def __init__(self, owner: TempFiles, fd: int) -> None:
        self.owner = owner
        self.fd = fd
        self.size = 0

    def append(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, self.size)
                self.size += written
                view = view[written:]
        except OSError as exc:
            raise TempFileError(f"cannot write a temporary file in {self.owner.directory}: "
                                f"{exc.strerror or exc}") from exc

    def read(self, offset: int, count: int) -> bytes:
        return os.pread(self.fd, min(count, self.size - offset), offset)

    def clear(self) -> None:
        """Start over empty (the disk space is given back)."""
        os.ftruncate(self.fd, 0)
        self.size = 0

    def close(self) -> None:
        """Done with it: the file goes back to its owner, emptied (or is closed)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.owner.give_back(fd)

    def __del__(self) -> None:
        # A safety net: every owner closes its file in a finally.
        if self.fd >= 0:
            os.close(self.fd)


def _open_unnamed(directory: str) -> int:
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        # EISDIR: a kernel before 3.11 takes O_TMPFILE for O_DIRECTORY.
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR):
            raise TempFileError(f"cannot create a temporary file in {directory}: "
                                f"{exc.strerror or exc}") from exc
    # No O_TMPFILE on this file system: a name for an instant.
    path = os.path.join(directory, f"{_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TempFileError(f"cannot create a temporary file in {directory}: "
                            f"{exc.strerror or exc}") from exc
    os.unlink(path)
    return fd


def temp_dir_of(data_dir: str) -> str:
    """Where the temporary files go: ``DATA_DIR/tmp`` (a relative data_dir is taken from
    the working directory, as the queue server and the result store take it)."""
    return str(Path(data_dir).resolve() / TEMP_DIR_NAME)


def prepare_temp_dir(temp_dir: str) -> None:
    """Create ``temp_dir``, check it by making a temporary file in it, and remove files a
    crash left; raises ``TempFileError`` naming the directory when it is unusable, so the
    gateway refuses to start rather than fail on its first large body."""
    directory = Path(temp_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TempFileError(f"cannot create the temporary directory {directory} (data_dir): "
                            f"{exc.strerror or exc}") from exc
    os.close(_open_unnamed(str(directory)))
    now = time.time()
    for leftover in directory.glob(f"{_PREFIX}*"):
        try:
            if now - leftover.stat().st_mtime > LEFTOVER_AGE:
                leftover.unlink()
        except OSError:
            pass  # another gateway process took it first
