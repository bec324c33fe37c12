"""The optional HTTP listener that receives OAuth redirects
(MAILGATE_OAUTH_CALLBACK_LISTEN): `GET /oauth/callback?state=…&code=…` completes
the sign-in and answers a plain page saying how it went. For deployments
without an admin UI that receives the redirect itself (which would call
CompleteAuthorization). The standard library's HTTP server, in a thread.

It faces browsers, so anyone who reaches it: a connection has READ_TIMEOUT
seconds to send its whole request (a client that sends nothing, or a byte at a
time, is dropped when they pass), and at most MAX_CONNECTIONS are served at once.
One more arriving then makes room by dropping the oldest that is still sending
its request (a browser sends its redirect as soon as it is connected, so idle
connections cannot keep a real one out); when all of them are sign-ins under way,
it is answered 503 at once and closed."""
from __future__ import annotations

import asyncio
import html
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from ..errors import MailgateError

if TYPE_CHECKING:
    from .lifecycle import Providers

log = logging.getLogger("mailgate.oauth_callback")

PATH = "/oauth/callback"
READ_TIMEOUT = 5.0  # seconds a connection has to send its request line and headers
MAX_CONNECTIONS = 32  # connections served at once
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class CallbackListener:
    def __init__(self, listen: str, *, read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        self._server = server_class((host, int(port)), _Handler, read_timeout=read_timeout,
                                    max_connections=max_connections)
        self._server.listener = self
        self._thread: threading.Thread | None = None
        self.providers: Providers | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def redirect_uri(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}{PATH}"

    def start(self, providers: "Providers", loop: asyncio.AbstractEventLoop) -> None:
        self.providers, self.loop = providers, loop
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mailgate-oauth-callback", daemon=True)
        self._thread.start()
        log.info("OAuth redirects received at %s", self.redirect_uri)

    def close(self) -> None:
        if self._thread:
            self._server.shutdown()
        self._server.server_close()

    def complete(self, query: str) -> tuple[int, str, str]:
        """(HTTP status, title, what happened) for a redirect's query string."""
        params = dict(parse_qsl(query))
        if not params.get("state"):
            return 400, "Not a sign-in answer", "The address has no state parameter."
        assert self.providers and self.loop
        call = self.providers.complete_authorization(params["state"], params)
        try:
            stored, _ = asyncio.run_coroutine_threadsafe(call, self.loop).result(120)
        except MailgateError as e:
            return 400, "Sign-in not completed", e.message
        if stored.state.value == "GREEN":
            return 200, "Signed in", f"{stored.config.display_name} is active: {stored.state_reason}."
        return 200, "Sign-in failed", f"{stored.config.display_name}: {stored.state_reason}"


class _HTTPServer(ThreadingHTTPServer):
    """Tracks the connections it serves: since when each has been reading its
    request (None once read). The accept loop drops the ones past their time
    (`service_actions`, every poll interval) and makes room for new ones."""

    daemon_threads = True
    request_queue_size = 128  # a burst of connections waits in the kernel, not refused there

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 read_timeout: float, max_connections: int) -> None:
        self.read_timeout, self.max_connections = read_timeout, max_connections
        self.listener: CallbackListener | None = None
        self._lock = threading.Lock()
        self._reading: dict[socket.socket, float | None] = {}
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._lock:
            if len(self._reading) >= self.max_connections:
                waiting = [(since, sock) for sock, since in self._reading.items() if since is not None]
                if not waiting:  # every one a sign-in under way: no room
                    self._refuse(request)
                    return
                self._drop(min(waiting, key=lambda w: w[0])[1])
            self._reading[request] = time.monotonic()
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._reading.pop(request, None)

    def request_read(self, request: socket.socket) -> None:
        with self._lock:
            if request in self._reading:
                self._reading[request] = None

    def service_actions(self) -> None:
        late = time.monotonic() - self.read_timeout
        with self._lock:
            for sock in [s for s, since in self._reading.items() if since is not None and since < late]:
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """Ends a connection still reading (lock held): its thread reads the end and stops."""
        self._reading.pop(sock, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "mailgate"
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # each read; the whole request: service_actions
        super().setup()

    def parse_request(self) -> bool:
        done = super().parse_request()
        self.server.request_read(self.request)  # read: a sign-in may take longer than that
        return done

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path != PATH:
            return self._page(404, "Not found", "Nothing here.")
        listener = self.server.listener
        assert listener is not None
        try:
            self._page(*listener.complete(url.query))
        except Exception:  # noqa: BLE001 - the browser gets a page; the log gets the rest
            log.exception("OAuth redirect failed")
            self._page(500, "Sign-in not completed", "The server failed; see its log.")

    def _page(self, status: int, title: str, text: str) -> None:
        body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # The query holds the code: log the path only (none yet for a request cut short).
        log.debug("%s %s", getattr(self, "command", None) or "-",
                  urlsplit(getattr(self, "path", "") or "").path or "-")
