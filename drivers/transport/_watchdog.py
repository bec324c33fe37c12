"""Overall deadline for opening a connection.

The per-operation socket timeout bounds each read, but a server that drips one
byte every few seconds satisfies every read and could hold a worker forever. One
shared daemon thread shuts down the socket of any attempt whose overall deadline
passes; the blocked read then sees end-of-file and the attempt fails with TIMEOUT.

We shut down a duplicate of the socket's descriptor that we own: it stays valid
while the library closes or wraps (TLS detaches the original socket object) its
own, and closing it under the lock guarantees we never touch a descriptor number
that the process has reused for another connection.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

_lock = threading.Condition()
_heap: list[tuple[float, int, "Guard"]] = []
_seq = itertools.count()
_thread: threading.Thread | None = None


class Guard:
    def __init__(self, sock: socket.socket) -> None:
        # fromfd rather than sock.dup(): an ssl.SSLSocket cannot dup() itself (the
        # IMAP watcher guards commands on TLS connections); the duplicate is a plain
        # socket on the same connection either way.
        self._dup: socket.socket | None = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        self.fired = False

    def cancel(self) -> None:
        with _lock:
            if self._dup is not None:
                self._dup.close()
                self._dup = None

    def _fire(self) -> None:  # called with _lock held
        if self._dup is not None:
            self.fired = True
            try:
                self._dup.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._dup.close()
            self._dup = None


def watch(sock: socket.socket, seconds: float) -> Guard:
    """Shuts `sock` down in `seconds` unless the returned guard is cancelled first."""
    global _thread
    guard = Guard(sock)
    with _lock:
        heapq.heappush(_heap, (time.monotonic() + seconds, next(_seq), guard))
        if _thread is None:
            _thread = threading.Thread(target=_run, name="mailgate-transport-watchdog", daemon=True)
            _thread.start()
        _lock.notify()
    return guard


def _run() -> None:
    with _lock:
        while True:
            now = time.monotonic()
            while _heap and _heap[0][0] <= now:
                heapq.heappop(_heap)[2]._fire()
            _lock.wait(_heap[0][0] - now if _heap else None)
