"""The write lock every process on one SQLite file takes turns on, and where it works.

With the SQLite Python 3.11 links (3.40; the WAL-reset race is in 3.7.0 to 3.51.2,
fixed in 3.51.3 and the 3.44.6 and 3.50.7 backports), two connections that write or
checkpoint one WAL database at the same moment can, rarely, corrupt it: a checkpoint
that overlaps the commit that restarts the WAL loses pages. So no two of our
connections ever do: each write transaction, from `BEGIN IMMEDIATE` to the end of its
`COMMIT` (the automatic checkpoint runs inside it), each explicit checkpoint and each
close (the last connection checkpoints) holds an exclusive `flock` on `<file>-lock`.
The kernel hands the lock to the next waiter the moment it is let go (SQLite's own busy
handler sleeps 1 to 100 ms between tries instead), and drops it when a holder dies.

The same file carries the news (`bump`): a process that made deliveries due writes
to it, and `watch.py` turns that write into a wake-up for the workers of every other
process.

`flock` means nothing between hosts: a database on a network filesystem is refused.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from cascade_notify.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per file, as documented
    fcntl = None  # type: ignore[assignment]

#: Filesystems whose locks do not hold between hosts (or at all): /proc/mounts names.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.rclone",
        "fuse.s3fs",
        "davfs",
    }
)


def network_filesystem(path: str, mounts: str | None = None) -> tuple[str, str] | None:
    """(type, mount point) if `path` lies on a network filesystem, per /proc/mounts (or
    `mounts`, its text); None on a local one or where /proc/mounts does not exist."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    where = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[1])):
            best = (fields[2], point)
    if best is not None and best[0] in NETWORK_FILESYSTEMS:
        return best
    return None


def _unescape(field: str) -> str:
    # /proc/mounts writes a space as \040, a tab as \011, a backslash as \134
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def refuse_network_filesystem(path: str) -> None:
    """Raise StoreError if the database `path` is on a network filesystem."""
    found = network_filesystem(path)
    if found is not None:
        kind, point = found
        raise StoreError(
            f"the SQLite store {path} is on a network filesystem ({kind} mounted at {point}): "
            "SQLite's locks and ours do not hold between hosts there, and two hosts writing "
            "it would corrupt it; put the file on a local disk of the one host that runs "
            "the processes, or use PostgreSQL"
        )


class FileLock:
    """The exclusive `flock` on `<database>-lock`, shared by every process and store
    object on the file (each opens the file itself, so they exclude each other too)."""

    def __init__(self, database: str) -> None:
        self.path = f"{database}-lock"
        self._fd: int | None = None
        self.held = False

    def open(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store's lock {self.path}: {exc}") from exc

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        if fcntl is None or self._fd is None:
            self.held = True
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def acquire(self) -> None:
        """Take the lock, waiting as long as it takes (in a thread, never the event loop's)."""
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held and fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.held = False

    def bump(self) -> None:
        """Tell watchers deliveries became due: a write whose bytes never repeat (the pid and
        the time), so a watcher that compares them (where inotify is missing) sees each."""
        if self._fd is not None:
            os.pwrite(self._fd, struct.pack("<qq", os.getpid(), time.time_ns()), 0)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # also lets go of the lock
        self.held = False


__all__ = ["NETWORK_FILESYSTEMS", "FileLock", "network_filesystem", "refuse_network_filesystem"]
