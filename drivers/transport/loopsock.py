"""An open socket, plain or TLS, driven by the running event loop: what carries the
SMTP pool's transactions instead of smtplib's blocking socket in a worker thread (or
aiosmtplib's asyncio streams; see pool.py for the equivalence test and benchmark).

Connections are opened, secured and logged in by blocking code in a worker thread
(the same code that checks credentials, with its trace, deadline and error
classification). The conversation that follows, message after message, runs on
the event loop: no thread hop and no thread wake-up per reply, which is what a
busy outbox pays most for.

asyncio cannot adopt an ssl.SSLSocket, so this drives the socket itself in
non-blocking mode: it tries the call first and waits for readiness only when the
call says it would block. Reading first matters for TLS: decrypted bytes already
buffered in the SSL object are invisible to epoll.

Per reply, the cheap way: the socket stays registered with the loop from its first
wait until it is closed, idle spells in a pool included (registering and
unregistering per message cost a sixth of the pool's CPU per message), and one
timer enforces `deadline`, re-armed only when it fires early (each command pushes
the deadline later; a timer per command would cost a heap entry and a cancel for
every reply). An idle socket that turns readable (the server closing it) is
unregistered then, and the next read finds out why.
"""
from __future__ import annotations

import asyncio
import socket
import ssl

__all__ = ["LoopSocket"]

_CHUNK = 65536


class LoopSocket:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        # loop.time() by which the operation under way must be done; None: no limit.
        self.deadline: float | None = None
        self._buf = bytearray()
        self._watching: asyncio.AbstractEventLoop | None = None  # registered for reading with it
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def readline(self, limit: int) -> bytes:
        """The next line, with its line end. EOFError if the peer closed first;
        ValueError for a line longer than `limit` (line end included); TimeoutError
        past the deadline."""
        start = 0
        while True:
            end = self._buf.find(b"\n", start, limit)
            if end >= 0:
                line = bytes(self._buf[:end + 1])
                del self._buf[:end + 1]
                return line
            if len(self._buf) >= limit:  # no line end within `limit` bytes: refused, nothing more is read
                raise ValueError(f"line longer than {limit} bytes")
            start = len(self._buf)
            await self._fill()

    async def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError):
                await self._ready(write=True)
            except ssl.SSLWantReadError:  # TLS wants the peer's bytes first
                await self._ready(write=False)

    def send_nowait(self, data: bytes) -> None:
        """As much of `data` as the socket takes now (a courtesy such as QUIT)."""
        try:
            self.sock.send(data)
        except OSError:
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_reading()  # before the descriptor is gone (and perhaps reused)
        try:
            self.sock.close()
        except OSError:
            pass

    async def _fill(self) -> None:
        while True:
            try:
                data = self.sock.recv(_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError):
                await self._ready(write=False)
                continue
            except ssl.SSLWantWriteError:
                await self._ready(write=True)
                continue
            if not data:
                raise EOFError("connection closed by the server")
            self._buf += data
            return

    async def _ready(self, *, write: bool) -> None:
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        if fd < 0:
            raise ConnectionAbortedError("socket closed")
        if self.deadline is not None:
            if loop.time() >= self.deadline:
                raise TimeoutError()
            if self._timer is None or self._timer.when() > self.deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self.deadline, self._expire, loop)
        self._waiter = loop.create_future()
        if write:  # rare: a body larger than the socket's buffer
            loop.add_writer(fd, _wake, self._waiter)
        elif self._watching is not loop:
            self._stop_reading()
            loop.add_reader(fd, self._readable)
            self._watching = loop
        try:
            await self._waiter
        finally:
            self._waiter = None
            if write:
                loop.remove_writer(fd)

    def _stop_reading(self) -> None:
        if self._watching is not None:
            try:
                self._watching.remove_reader(self.sock.fileno())
            except (RuntimeError, ValueError):  # the loop is closed, or the socket
                pass
            self._watching = None

    def _readable(self) -> None:
        if self._waiter is None:
            # Nobody reads now: stop watching, or epoll would report it again and again.
            self._stop_reading()
        else:
            _wake(self._waiter)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self.deadline is None:
            return
        if loop.time() < self.deadline:  # the deadline moved on since the timer was set
            self._timer = loop.call_at(self.deadline, self._expire, loop)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError())


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
