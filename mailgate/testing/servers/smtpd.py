"""A real SMTP server for the tests: aiosmtpd in its own thread.

Modes (the security settings a provider can be configured with):

* ``NONE``: plain text, no STARTTLS offered, AUTH allowed without TLS.
* ``STARTTLS``: plain port offering STARTTLS; every command but EHLO, NOOP, QUIT
  and STARTTLS is refused (530) before STARTTLS, AUTH is only offered after it.
* ``TLS``: implicit TLS from the first byte.

AUTH PLAIN and LOGIN are checked against ``users`` (login -> password); wrong
credentials get ``535 5.7.8``. XOAUTH2 is offered when an ``xoauth2(user, token)``
validator is given. Received messages are recorded in ``messages``; tests script
failures with ``fail_next``, slow the reply to DATA with ``data_reply_delay`` and can
forward accepted mail with ``deliver_to``.
Passwords are never logged (aiosmtpd masks AUTH lines in its own log).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session

from .certs import TestCA
from .silent import free_ports

__all__ = ["SmtpServer", "SmtpHandler", "ReceivedMessage", "MODES"]

log = logging.getLogger(__name__)

MODES = ("NONE", "STARTTLS", "TLS")

# RFC 5321 4.5.3.1.6: a line of mail data is at most 998 octets plus CRLF.
MAX_DATA_LINE = 998
# Command lines may be much longer than the 512 octets of RFC 5321: a real-size
# XOAUTH2 bearer token makes an AUTH line of ~1.3 KB (stock aiosmtpd answers
# "500 Command line too long").
MAX_COMMAND_LINE = 16384

# What Gmail answers (base64 in a 334) to a bad XOAUTH2 token before its 535.
XOAUTH2_ERROR = b'{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}'


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # as received: CRLF line ends, dot-stuffing removed
    login: str | None  # the authenticated login, None without AUTH
    mail_options: list[str] = field(default_factory=list)  # e.g. ["SMTPUTF8", "BODY=8BITMIME"]
    rcpt_options: list[str] = field(default_factory=list)


class _Session(Session):
    # aiosmtpd 1.4 itself sets the deprecated Session.login_data after every AUTH
    # and warns about it; a plain attribute keeps that out of the test reports.
    login_data = None


class _SMTP(SMTP):
    """aiosmtpd's SMTP with room for XOAUTH2 command lines.

    ``line_length_limit`` is also the stream reader's limit, which holds whole AUTH
    lines and challenge responses, so it must grow too; the RFC limit on mail data
    lines that it used to enforce is checked in :meth:`SmtpHandler.handle_DATA`.
    """

    line_length_limit = MAX_COMMAND_LINE
    command_size_limit = MAX_COMMAND_LINE
    # A class of its own: SMTP's defaultdict would fall back to SMTP's 512.
    command_size_limits = collections.defaultdict(lambda: MAX_COMMAND_LINE)

    def _create_session(self) -> Session:
        return _Session(self.loop)


class SmtpHandler:
    """aiosmtpd handler: authentication, recording, scripted failures."""

    def __init__(self, users: dict[str, str], *,
                 deliver_to: Callable[[bytes, list[str]], object] | None = None,
                 xoauth2: Callable[[str, str], bool] | None = None):
        self.users = users
        self.deliver_to = deliver_to
        self.xoauth2 = xoauth2
        self._initial = (deliver_to, xoauth2)
        self.messages: list[ReceivedMessage] = []  # accepted
        self.rejected: list[ReceivedMessage] = []  # refused by fail_next or deliver_to
        # Replies for the next DATA commands, one popped per message, e.g.
        # [(451, "4.3.0 Try again later")] * 2 -> two refusals, then 250.
        self.fail_next: list[tuple[int, str]] = []
        # Seconds every reply to the end of DATA is held (a slow server), the message
        # recorded only then.
        self.data_reply_delay = 0.0

    def reset(self) -> None:
        """Forget messages and scripted failures, no data_reply_delay; deliver_to and
        xoauth2 go back to the constructor's values."""
        self.messages.clear()
        self.rejected.clear()
        self.fail_next.clear()
        self.data_reply_delay = 0.0
        self.deliver_to, self.xoauth2 = self._initial

    # aiosmtpd's `authenticator` callback (PLAIN and LOGIN).
    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if login in self.users and self.users[login] == password:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)  # -> 535 5.7.8

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        # "user=<login>\x01auth=Bearer <token>\x01\x01", base64, as initial response
        # or after an empty challenge.
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False)  # -> 535
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):  # aborted, aiosmtpd answered already
                return AuthResult(success=False)
        fields = dict(part.split("=", 1) for part in
                      blob.decode("utf-8", "replace").split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if self.xoauth2 is not None and token and self.xoauth2(user, token):
            return AuthResult(success=True, auth_data=user)
        # Like Gmail: an error challenge, the client answers (empty), then 535.
        if not isinstance(await server.challenge_auth(XOAUTH2_ERROR), bytes):
            return AuthResult(success=False)  # "*": aiosmtpd answered 501 already
        return AuthResult(success=False, handled=False)  # -> 535 5.7.8

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.data_reply_delay:
            await asyncio.sleep(self.data_reply_delay)
        content: bytes = envelope.original_content
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=content,
            login=session.auth_data if session.authenticated else None,
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
        )
        if any(len(line.rstrip(b"\r")) > MAX_DATA_LINE for line in content.split(b"\n")):
            self.rejected.append(message)
            return "500 5.5.0 Line too long (see RFC5321 4.5.3.1.6)"
        if self.fail_next:
            code, text = self.fail_next.pop(0)
            self.rejected.append(message)
            return f"{code} {text}"
        if self.deliver_to is not None:
            try:
                # Blocking (e.g. LMTP to Dovecot): off the event loop.
                await asyncio.get_running_loop().run_in_executor(
                    None, self.deliver_to, content, list(envelope.rcpt_tos))
            except Exception:
                log.exception("deliver_to failed")
                self.rejected.append(message)
                return "451 4.3.0 Local delivery failed"
        self.messages.append(message)
        return "250 2.0.0 OK"


class SmtpServer:
    """An SMTP server on ``host:port`` in one of :data:`MODES`.

    Context manager, or ``start()`` / ``stop()``. The port is chosen in ``__init__``
    and kept across stop/start.
    """

    def __init__(self, mode: str, users: dict[str, str], ca: TestCA, *,
                 host: str = "127.0.0.1",
                 deliver_to: Callable[[bytes, list[str]], object] | None = None,
                 xoauth2: Callable[[str, str], bool] | None = None,
                 auth_required: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.ca = ca
        self._tls = ca.server_context() if mode != "NONE" else None
        self.host = host
        # Controller needs a real port: it connects to it once at start-up.
        (self.port,) = free_ports(1, host)
        self.handler = SmtpHandler(users, deliver_to=deliver_to, xoauth2=xoauth2)
        self.auth_required = auth_required
        self._controller: Controller | None = None

    # Shortcuts to the handler's state.
    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    @property
    def fail_next(self) -> list[tuple[int, str]]:
        return self.handler.fail_next

    @fail_next.setter
    def fail_next(self, replies: list[tuple[int, str]]) -> None:
        self.handler.fail_next = list(replies)

    def reset(self) -> None:
        """Forget received messages and scripted failures (see SmtpHandler.reset)."""
        self.handler.reset()

    def wait_for_messages(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages were accepted; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.mode} SMTP server got {len(self.messages)} of {count} "
                    f"messages in {timeout} s (refused: {len(self.handler.rejected)})")
            time.sleep(0.01)
        return list(self.messages)

    def _factory(self) -> SMTP:  # called for every connection
        return _SMTP(
            self.handler,
            hostname="localhost",  # the default, socket.getfqdn(), may wait on DNS
            enable_SMTPUTF8=True,
            tls_context=self._tls if self.mode == "STARTTLS" else None,
            require_starttls=self.mode == "STARTTLS",
            # In TLS mode aiosmtpd does not know the transport is encrypted (it only
            # tracks STARTTLS) and would refuse AUTH with 538: so no requirement.
            auth_require_tls=self.mode == "STARTTLS",
            auth_required=self.auth_required,  # aiosmtpd warns if TLS is not required
            authenticator=self.handler.authenticate,
            auth_exclude_mechanism=[] if self.handler.xoauth2 else ["XOAUTH2"],
        )

    def start(self) -> SmtpServer:
        if self._controller is None:
            controller = Controller(
                self.handler, hostname=self.host, port=self.port,
                ssl_context=self._tls if self.mode == "TLS" else None)
            controller.factory = self._factory  # our SMTP subclass and settings
            controller.start()
            self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpServer {self.mode} {self.host}:{self.port}>"
