"""A real mailgate server for tests: grpc.aio on 127.0.0.1:0 in a thread of its
own, reached through ordinary generated stubs like any client in any language."""
from __future__ import annotations

import asyncio
import base64
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import grpc
from sqlalchemy import create_engine, text

from mailgate.client.credentials import with_token
from mailgate.server import app
from mailgate.server.config import Settings
from mailgate.v1 import provider_service_pb2_grpc

# A raw message with its attachments can pass gRPC's 4 MB default.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]

POSTGRES_URL = os.environ.get("MAILGATE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class ServerThread:
    def __init__(self, settings: Settings, extra_plugins: Iterable[object] = (),
                 credentials: grpc.ChannelCredentials | None = None):
        """`credentials`: TLS for the channels to a server with MAILGATE_TLS_CERT."""
        self.settings, self.credentials = settings, credentials
        self._plugins = list(extra_plugins)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mailgate-server", daemon=True)
        self.app: app.App | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> "ServerThread":
        self._thread.start()
        self.app = self.call(app.start(self.settings, self._plugins))
        self.channel = self.open_channel(self.token)
        return self

    @property
    def token(self) -> str:
        """The administrator token the server wrote on start ("" with authentication off)."""
        path = self.settings.admin_token_file
        return path.read_text().strip() if self.settings.auth and path.exists() else ""

    def open_channel(self, token: str = "", credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A new channel to the server presenting `token` (none if empty), over TLS
        with `credentials` (by default the server's own)."""
        credentials = credentials or self.credentials
        raw = (grpc.secure_channel(self.address, credentials, options=CHANNEL_OPTIONS) if credentials
               else grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS))
        return with_token(raw, token) if token else raw

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Runs a coroutine on the server's loop (to reach the domain directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def address(self) -> str:
        assert self.app
        return self.app.address

    @property
    def stub(self) -> provider_service_pb2_grpc.ProviderServiceStub:
        return provider_service_pb2_grpc.ProviderServiceStub(self.channel)

    def stop(self) -> None:
        """Stops the server like SIGTERM would; safe to call twice."""
        if self.channel:
            self.channel.close()
            self.channel = None
        if self.app:
            self.call(self.app.stop(grace=1))
            self.app = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


LOOPBACK = "127.0.0.0/8,::1/128"  # where the test mail servers listen: the network policy lets them be


def serve_env(**overrides: str) -> dict[str, str]:
    """The environment of a `mailgate serve` process in a test: this one's, without a
    secret key (the process makes its key file), quiet, reaching the test servers."""
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_SECRET_KEY"}
    env.update(MAILGATE_LOG_LEVEL="WARNING", MAILGATE_NETWORK_ALLOW=LOOPBACK, **overrides)
    return env


def connect_process(address: str, token_file: Path | None, timeout: float = 30,
                    credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel to a `mailgate serve` process, once it listens, presenting the
    administrator token it wrote (before listening) to `token_file`; none if it
    wrote none (authentication off) or `token_file` is None. Over TLS with `credentials`."""
    raw = (grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS) if credentials
           else grpc.insecure_channel(address, options=CHANNEL_OPTIONS))
    grpc.channel_ready_future(raw).result(timeout=timeout)
    if token_file is None or not Path(token_file).exists():
        return raw
    return with_token(raw, Path(token_file).read_text().strip())


def make_settings(directory: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    settings = Settings(listen="127.0.0.1:0",
                        database_url=database_url or f"sqlite:///{directory / 'mailgate.db'}",
                        key_file=directory / "mailgate.key", io_workers=8, login_backoff=0.5,
                        login_backoff_cap=2.0, grace=1.0, retry_base=0.3, first_attempt_wait=5.0,
                        poll_interval=0.5, network_allow=LOOPBACK)
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings


class PostgresSchema:
    """A throw-away schema in the machine's PostgreSQL, so runs never collide."""

    def __init__(self, base_url: str = POSTGRES_URL):
        self.name = "mg_" + uuid.uuid4().hex[:12]
        self._engine = create_engine(base_url)
        with self._engine.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{self.name}"'))
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self._engine.begin() as c:
            c.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self._engine.dispose()


def random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def database_urls(directory: Path, engine: str) -> Iterator[str]:
    """Yields a fresh database URL for `engine` ("sqlite" or "postgresql")."""
    if engine == "sqlite":
        yield f"sqlite:///{directory / 'mailgate.db'}"
        return
    schema = PostgresSchema()
    try:
        yield schema.url
    finally:
        schema.drop()
