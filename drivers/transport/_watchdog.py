"""Overall deadline for opening a connection.

The per-operation socket timeout bounds each read, but a server that drips one
byte every few seconds satisfies every read and could hold a worker forever. One
shared daemon thread shuts down the socket of any attempt whose overall deadline
passes; the blocked read then sees end-of-file and the attempt fails with TIMEOUT.

A transfer's deadline may grow with what arrives (`credit`): a message the server
announced as 50 MB gets more time only as its bytes come in, so a server that
announces much and then drips is cut off as early as one that announced nothing.

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

from .limits import MIN_BYTES_PER_SECOND

_lock = threading.Condition()
_heap: list[tuple[float, int, "Guard"]] = []
_seq = itertools.count()
_thread: threading.Thread | None = None


class Guard:
    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        # fromfd rather than sock.dup(): an ssl.SSLSocket cannot dup() itself (the
        # IMAP watcher guards commands on TLS connections); the duplicate is a plain
        # socket on the same connection either way.
        self._dup: socket.socket | None = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        self.fired = False

    @property
    def allowed(self) -> float:
        """The seconds the attempt had, credits included."""
        return self.deadline - self.started

    def credit(self, received: int) -> None:
        """`received` bytes arrived: the deadline moves on by the time they take at
        MIN_BYTES_PER_SECOND (read by the watchdog thread when the old one passes)."""
        self.deadline += received / MIN_BYTES_PER_SECOND

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
    guard = Guard(sock, seconds)
    with _lock:
        heapq.heappush(_heap, (guard.deadline, next(_seq), guard))
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
                guard = heapq.heappop(_heap)[2]
                if guard.deadline > now and guard._dup is not None:  # credited meanwhile
                    heapq.heappush(_heap, (guard.deadline, next(_seq), guard))
                else:
                    guard._fire()
            _lock.wait(_heap[0][0] - now if _heap else None)
