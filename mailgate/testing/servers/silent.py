"""Network helpers for failure tests: free ports, a listener that never answers
(TIMEOUT) and a port where nothing listens (CONNECT_FAILED)."""

from __future__ import annotations

import socket
import threading

__all__ = ["SilentListener", "ClosedPort", "free_ports"]


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports, found by binding port 0 (all at once, so
    they differ) and closing. A small race with other processes remains; fine here."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SilentListener:
    """Accepts TCP connections on ``host:port`` and never sends a byte.

    Connections are accepted (not left in the backlog, which would fill up and turn
    a read timeout into a connect timeout) and kept open until :meth:`stop`.
    ``connections`` counts the accepted ones.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.connections = 0
        self._sock: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def start(self) -> SilentListener:
        if self._sock is None:
            self._sock = socket.create_server((self.host, 0), backlog=128)
            self.port = self._sock.getsockname()[1]
            self._thread = threading.Thread(
                target=self._accept, args=(self._sock,), name="SilentListener", daemon=True)
            self._thread.start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # stop() shut the socket down
                return
            self._clients.append(conn)
            self.connections += 1

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
        except OSError:
            pass
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in self._clients:
            conn.close()
        self._clients.clear()

    def __enter__(self) -> SilentListener:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ClosedPort:
    """A port on ``host`` where nothing listens: connecting is refused at once.

    The port stays bound (without listen()) until :meth:`close`, so no other
    program can start listening there during the test.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
