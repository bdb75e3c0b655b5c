"""Ending a network transfer at a deadline, whatever the server does.

A read timeout does not bound a transfer: a server that sends one byte every two seconds (in its
headers or its body) never lets a read time out, and a download of a few MB then takes days.
``cut_at(deadline, cancel)`` starts a watcher; when the deadline passes, or the job's ``cancel``
is set, it shuts down the sockets of every connection this thread has used inside the block, so a
read blocked on them ends at once with a connection error, and ``watch.expired`` (and
``watch.cancelled``) tell the caller why it ended. Only connections of pools
set up with ``watch_pools`` take part (the worker's MinIO client and its URL fetches).

The one wait not cut is a TCP connect in progress (its socket is not reachable yet): callers give
connects a timeout no longer than the time left.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CANCEL_POLL_S = 0.1  # how soon a set cancel cuts a transfer
_active = threading.local()  # .watches: the CutWatch blocks this thread is inside, innermost last


class DeadlinePassed(Exception):
    """Raised instead of waiting to retry when the retry could only start after the deadline."""


class CutWatch:
    """The connections used inside one ``cut_at`` block, and whether its deadline cut them."""

    def __init__(self) -> None:
        self.expired = False  # the connections were cut (at the deadline, or for a cancel)
        self.cancelled = False  # ... because the job was cancelled
        self._connections: list[Any] = []
        self._open = True
        self._lock = threading.Lock()

    def track(self, connection: Any) -> None:
        with self._lock:
            if not any(known is connection for known in self._connections):
                self._connections.append(connection)
            expired = self.expired
        if expired:  # a connection made after the cut (a retry) is cut too
            _shut(connection)

    def cut(self, *, cancelled: bool = False) -> None:
        with self._lock:
            if not self._open:
                return
            self.expired = True
            self.cancelled = cancelled
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._connections.clear()


@contextmanager
def cut_at(deadline: float | None, cancel: threading.Event | None = None) -> Iterator[CutWatch]:
    """Cuts the connections this thread uses inside the block when ``time.monotonic()`` reaches
    ``deadline`` or ``cancel`` is set (``None``: never)."""
    watch = CutWatch()
    if deadline is None and cancel is None:
        yield watch
        return
    watches: list[CutWatch] = _active.__dict__.setdefault("watches", [])
    watches.append(watch)
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(watch, deadline, cancel, done), daemon=True)
    watcher.start()
    try:
        yield watch
    finally:
        done.set()
        watcher.join()
        watch.close()
        watches.remove(watch)


def cancelled_here() -> bool:
    """Whether a ``cut_at`` block this thread is inside was cut for a cancel (no retry then)."""
    return any(watch.cancelled for watch in getattr(_active, "watches", ()))


def _watch(
    watch: CutWatch, deadline: float | None, cancel: threading.Event | None, done: threading.Event
) -> None:
    while True:
        wait = CANCEL_POLL_S if cancel is not None else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                watch.cut()
                return
            wait = left if wait is None else min(wait, left)
        if done.wait(wait):
            return
        if cancel is not None and cancel.is_set():
            watch.cut(cancelled=True)
            return


def time_left(deadline: float | None, limit: float) -> float:
    """``limit`` seconds, or less when the deadline is nearer (never below a millisecond)."""
    if deadline is None:
        return limit
    return max(0.001, min(limit, deadline - time.monotonic()))


def watch_pools(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """Makes the connections of ``manager``'s pools take part in ``cut_at`` blocks."""
    manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return manager


def _track(connection: Any) -> None:
    for watch in getattr(_active, "watches", ()):
        watch.track(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # The plain socket's shutdown also for TLS: SSLSocket.shutdown would drop its SSL object under
    # the reading thread's feet. A socket already closed raises OSError: nothing left to cut.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """Registers the connection with this thread's ``cut_at`` blocks before each request (its
    socket, once connected, is what a cut shuts) and again once connected."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self)
        super().request(*args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _track(self)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection
