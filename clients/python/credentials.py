"""Bearer tokens on a channel, and where a client finds its token."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import grpc

TOKEN_FILE = "mailgate.token"  # what `mailgate serve` writes beside its key file on first start


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] != "authorization"] + [self._metadata]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method, self.timeout, self.credentials = base.method, base.timeout, base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)
        self.metadata = metadata


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """`channel`, sending `authorization: Bearer <token>` on every call."""
    return grpc.intercept_channel(channel, _Bearer(token))


def tls_from_environment() -> grpc.ChannelCredentials | None:
    """TLS for a channel from MAILGATE_TLS_CA (PEM CAs to trust; `system` for the
    system's), MAILGATE_TLS_CLIENT_CERT and MAILGATE_TLS_CLIENT_KEY (a client
    certificate, for mutual TLS); None (plaintext) when none is set."""
    ca, cert, key = (os.environ.get(f"MAILGATE_TLS_{n}", "") for n in ("CA", "CLIENT_CERT", "CLIENT_KEY"))
    if not (ca or cert):
        return None
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    return grpc.ssl_channel_credentials(None if ca in ("", "system") else read(ca), read(key), read(cert))


def find_token() -> str:
    """The token in MAILGATE_TOKEN, else the file MAILGATE_TOKEN_FILE names, else
    ./mailgate.token (where a server started in this directory put its administrator
    token); empty if none."""
    token = os.environ.get("MAILGATE_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("MAILGATE_TOKEN_FILE", "") or TOKEN_FILE)
    try:
        return path.read_text().strip()
    except OSError:
        return ""
