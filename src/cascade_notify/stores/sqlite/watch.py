"""Hearing other processes' news on a SQLite file: a wake-up whenever one bumps the lock
file (`FileLock.bump`, after a commit that made deliveries due: a send, a receipt).

On Linux an inotify watch on the lock file makes the write an event on a descriptor the
event loop reads, so a worker hears a send of another process as soon as its commit
returned, and costs nothing while nothing happens. Where inotify is missing (or its
instances are used up) the watcher reads the file's 16 bytes every `POLL` seconds and
wakes when they changed (each bump writes bytes that never repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from typing import Final

from cascade_notify import _logmask

log = _logmask.logger("cascade_notify.stores.sqlite")

#: Seconds between looks at the lock file where inotify is missing.
POLL: Final = 0.05
_IN_MODIFY: Final = 0x2
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC


def _inotify(path: str) -> int | None:
    """A non-blocking inotify descriptor watching `path` for writes, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        log.warning("inotify unavailable (%s): polling %s", os.strerror(ctypes.get_errno()), path)
        return None
    if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
        log.warning("cannot watch %s (%s): polling it", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return fd


class Watch:
    """Calls `wake` in the running event loop whenever the lock file at `path` is bumped."""

    def __init__(self, path: str, wake: Callable[[], None]) -> None:
        self.path = path
        self._wake = wake
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def inotify(self) -> bool:
        """Whether it hears bumps by inotify (else by polling)."""
        return self._fd is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = _inotify(self.path)
        if self._fd is not None:
            self._loop.add_reader(self._fd, self._readable)
        else:
            self._poller = self._loop.create_task(self._poll(), name="cascade-sqlite-watch")
        self._wake()  # whatever became due before the watch began

    def _readable(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 4096):  # the events themselves say nothing more
                pass
        self._wake()

    async def _poll(self) -> None:
        seen = self._read()
        while True:
            await asyncio.sleep(POLL)
            now = self._read()
            if now != seen:
                seen = now
                self._wake()

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                return file.read(16)
        except OSError:
            return b""

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        if self._poller is not None:
            poller, self._poller = self._poller, None
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)


__all__ = ["POLL", "Watch"]
