"""Bookkeeping shared by connect_smtp/imap/pop3: one connection attempt's phases.

Each phase (connect, tls, auth) is timed and appended to the caller's trace as a
CheckResult; a failure appends the FAILED check plus SKIPPED checks for the
phases that did not run, and raises the classified TransportError. The login
throttle and the overall deadline are applied here, so the three protocols
behave alike.
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
from contextlib import contextmanager
from typing import Iterator

from mailgate.drivers import network
from mailgate.drivers.api import CheckResult, ErrorCode, Outcome

from . import _watchdog
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError, classify
from .throttle import LoginThrottle, default_throttle
from .tls import client_context

log = logging.getLogger("mailgate.transport")

STEPS = ("connect", "tls", "auth")


class Attempt:
    def __init__(self, side: str, endpoint: Endpoint, auth: Authenticator, *, timeout: float,
                 deadline: float | None, throttle: LoginThrottle | None,
                 trace: list[CheckResult] | None) -> None:
        if not timeout or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.side, self.endpoint, self.auth, self.timeout = side, endpoint, auth, timeout
        self.deadline = deadline if deadline is not None else 3 * timeout
        self.throttle = throttle if throttle is not None else default_throttle
        self.trace = trace if trace is not None else []
        self._key = self.throttle.key(side, endpoint, auth)
        self._started = time.monotonic()
        self._guard: _watchdog.Guard | None = None
        self._tcp_connected = False

    def check_throttle(self) -> None:
        """Raises BACKOFF (trace: connect and tls SKIPPED, auth FAILED) before any I/O."""
        try:
            self.throttle.check(self._key)
        except TransportError as error:
            for step in STEPS[:-1]:
                self._append(step, Outcome.SKIPPED, message="not run: login backed off")
            self.trace.append(error.check(self.endpoint.host, self.endpoint.port))
            self._log_failure(error, 0.0)
            raise

    def open_socket(self) -> socket.socket:
        """TCP connect with the per-operation timeout, to an address the network policy
        allows; starts the overall deadline."""
        sock = network.policy.connect(self.endpoint.host, self.endpoint.port, self.timeout)
        self._tcp_connected = True
        remaining = self.deadline - (time.monotonic() - self._started)
        self._guard = _watchdog.watch(sock, max(remaining, 0.0))
        return sock

    def tls_context(self, ca_pem: str | None) -> ssl.SSLContext:
        try:
            return client_context(ca_pem)
        except Exception as exc:  # noqa: BLE001 - a bad PEM is a configuration error
            raise TransportError(self.side, "tls", ErrorCode.TLS_FAILED,
                                 f"the provider's CA certificates could not be loaded ({type(exc).__name__})") from exc

    @contextmanager
    def step(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            if start - self._started > self.deadline:
                raise self._overall_timeout(step)
            yield
            if self._guard is not None and self._guard.fired:
                # The watchdog cut the socket: whatever the library made of the
                # truncated answer, this step did not complete in time.
                raise self._overall_timeout(step)
        except Exception as exc:
            error = self._classify(exc, step)
            self._fail(error, time.monotonic() - start)
            raise error from exc
        duration = time.monotonic() - start
        self._append(step, Outcome.PASSED, duration=duration)
        log.debug("%s.%s %s:%d passed in %.3f s", self.side, step,
                  self.endpoint.host, self.endpoint.port, duration)
        if step == "auth":
            self.throttle.succeeded(self._key)

    def skip(self, step: str, message: str) -> None:
        self._append(step, Outcome.SKIPPED, message=message)

    def done(self) -> None:
        """The connection is open and logged in: stop the overall deadline."""
        if self._guard is not None:
            self._guard.cancel()

    def _classify(self, exc: Exception, step: str) -> TransportError:
        if self._guard is not None and self._guard.fired:
            return self._overall_timeout(step)
        if type(exc).__module__ == "builtins" and not isinstance(exc, (OSError, EOFError, UnicodeError)):
            # A bug of ours, not a server's failure: keep the traceback in the log.
            log.warning("%s.%s %s:%d unexpected error", self.side, step,
                        self.endpoint.host, self.endpoint.port, exc_info=True)
        error = classify(exc, self.side, step, timeout=self.timeout)
        if (error.code is ErrorCode.TIMEOUT and step == "connect" and self._tcp_connected
                and self.endpoint.security != "TLS"):
            # Connected but no greeting: the classic STARTTLS/NONE-on-port-993/995/465 mistake.
            error.message += " waiting for the greeting (is this an implicit-TLS port?)"
        return error

    def _overall_timeout(self, step: str) -> TransportError:
        return TransportError(self.side, step, ErrorCode.TIMEOUT,
                              f"no complete answer within {self.deadline:g} s (overall limit)")

    def _fail(self, error: TransportError, duration: float) -> None:
        self.done()
        self.trace.append(error.check(self.endpoint.host, self.endpoint.port, duration))
        failed_at = STEPS.index(error.step) if error.step in STEPS else len(STEPS)
        for step in STEPS[failed_at + 1:]:
            self._append(step, Outcome.SKIPPED, message=f"not run: {self.side}.{error.step} failed")
        if error.code is ErrorCode.AUTH_FAILED:
            self.throttle.failed(self._key)
        self._log_failure(error, duration)

    def _log_failure(self, error: TransportError, duration: float) -> None:
        log.info("%s.%s %s:%d failed in %.3f s: %s %s", error.side, error.step, self.endpoint.host,
                 self.endpoint.port, duration, error.code.value, error.message)

    def _append(self, step: str, outcome: Outcome, *, message: str = "", duration: float = 0.0) -> None:
        self.trace.append(CheckResult(id=f"{self.side}.{step}", side=self.side, host=self.endpoint.host,
                                      port=self.endpoint.port, outcome=outcome, server_message=message,
                                      duration=duration))
