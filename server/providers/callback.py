"""The optional HTTP listener that receives OAuth redirects
(MAILGATE_OAUTH_CALLBACK_LISTEN): `GET /oauth/callback?state=…&code=…` completes
the sign-in and answers a plain page saying how it went. For deployments
without an admin UI that receives the redirect itself (which would call
CompleteAuthorization). The standard library's HTTP server, in a thread."""
from __future__ import annotations

import asyncio
import html
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from ..errors import MailgateError

if TYPE_CHECKING:
    from .lifecycle import Providers

log = logging.getLogger("mailgate.oauth_callback")

PATH = "/oauth/callback"


class CallbackListener:
    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, int(port)), _Handler)
        self._server.daemon_threads = True
        self._server.listener = self  # type: ignore[attr-defined]
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


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "mailgate"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path != PATH:
            return self._page(404, "Not found", "Nothing here.")
        listener: CallbackListener = self.server.listener  # type: ignore[attr-defined]
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
        # The query holds the code: log the path only.
        log.debug("%s %s", self.command, urlsplit(self.path).path)
