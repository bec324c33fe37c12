"""When a provider's access token is renewed, and what follows a renewal: the
token source's own rules, with a scripted renewal in place of the OAuth library
(the libraries themselves run against a real authorization server in test_oauth)."""
from __future__ import annotations

import threading
import time

import pytest

from mailgate.drivers.api import DriverContext
from mailgate.drivers.oauth import tokens as tokens_mod
from mailgate.drivers.oauth.tokens import MARGIN, Grant, Tokens
from mailgate.drivers.transport.errors import TokenError
from mailgate.testing.clock import FakeClock


class Recorder(DriverContext):
    def __init__(self) -> None:
        self.saved: list[dict[str, str]] = []
        self.lost: list[str] = []
        self.renewed: list[float] = []  # valid for, seconds
        self.unavailable: list[str] = []

    def run_blocking(self, fn, *args):  # not used by Tokens
        raise AssertionError

    def save_secrets(self, provider_id, secrets):
        self.saved.append(dict(secrets))

    def authorization_lost(self, provider_id, message):
        self.lost.append(message)

    def token_renewed(self, provider_id, valid_for):
        self.renewed.append(valid_for)

    def token_renewal_failed(self, provider_id, message):
        self.unavailable.append(message)


def script(*steps, clock: FakeClock | None = None, lifetime: float = 3600):
    """A renewal answering each call with the next step: an exception to raise,
    a dict of changed secrets, or None."""
    calls: list[int] = []

    def renew() -> Grant:
        calls.append(1)
        step = steps[min(len(calls), len(steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return Grant(f"token-{len(calls)}", (clock() if clock else time.time()) + lifetime, step or {})

    return renew, calls


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(tokens_mod, "BACKOFF", 0.01)


def test_a_fresh_token_is_reused_and_renewed_once_it_enters_the_margin_before_expiry():
    clock, ctx = FakeClock(), Recorder()
    renew, calls = script(None, clock=clock, lifetime=MARGIN + 60)
    tokens = Tokens("p1", renew, ctx, clock=clock)
    assert tokens.token() == "token-1"
    clock.now += 59
    assert tokens.token() == "token-1" and len(calls) == 1
    clock.now += 2  # inside the margin: renewed now, while the old token still works
    assert tokens.token() == "token-2" and len(calls) == 2
    assert ctx.renewed == [MARGIN + 60] * 2  # each renewal is told, for the provider's history


def test_a_rotated_refresh_token_is_saved_before_the_new_access_token_is_handed_out():
    ctx = Recorder()
    renew, _ = script({"refresh_token": "rt-2"})
    tokens = Tokens("p1", renew, ctx)
    assert tokens.token() == "token-1"
    assert ctx.saved == [{"refresh_token": "rt-2"}]


def test_a_rotated_refresh_token_the_store_refused_is_stored_with_the_next_renewal():
    class FlakyStore(Recorder):
        def save_secrets(self, provider_id, secrets):
            if not self.saved and not getattr(self, "failed", False):
                self.failed = True
                raise OSError("database is locked")
            super().save_secrets(provider_id, secrets)

    ctx = FlakyStore()
    renew, _ = script({"refresh_token": "rt-2"}, None)  # the library rotates once, then not again
    tokens = Tokens("p1", renew, ctx)
    with pytest.raises(TokenError) as e:
        tokens.token()
    assert not e.value.refused and ctx.saved == []
    assert tokens.token() == "token-2"
    assert ctx.saved == [{"refresh_token": "rt-2"}]


def test_an_unreachable_token_endpoint_is_retried_and_never_counts_as_a_refusal():
    ctx = Recorder()
    renew, calls = script(TokenError("connection reset", refused=False), None)
    assert Tokens("p1", renew, ctx).token() == "token-2"
    assert len(calls) == 2 and ctx.lost == [] and ctx.unavailable == []  # a failure retried at once is no news


def test_a_token_endpoint_down_through_every_attempt_raises_a_transient_error():
    ctx = Recorder()
    renew, calls = script(TokenError("connection refused", refused=False))
    with pytest.raises(TokenError) as e:
        Tokens("p1", renew, ctx).token()
    assert not e.value.refused and len(calls) == tokens_mod.ATTEMPTS and ctx.lost == []
    assert ctx.unavailable == ["connection refused"] and ctx.renewed == []


def test_a_refusal_is_reported_once_and_no_more_renewals_are_attempted():
    ctx = Recorder()
    renew, calls = script(TokenError("invalid_grant: AADSTS50173 revoked", refused=True))
    tokens = Tokens("p1", renew, ctx)
    for _ in range(3):
        with pytest.raises(TokenError) as e:
            tokens.token()
        assert e.value.refused
    assert len(calls) == 1
    assert ctx.lost == ["invalid_grant: AADSTS50173 revoked"]


def test_a_token_the_server_refused_is_renewed_on_the_next_call():
    renew, calls = script(None)
    tokens = Tokens("p1", renew, Recorder())
    first = tokens.token()
    tokens.invalidate("some-older-token")  # not the current one: kept
    assert tokens.token() == first
    tokens.invalidate(first)
    assert tokens.token() == "token-2" and len(calls) == 2


def test_threads_needing_a_token_at_once_share_one_renewal():
    started, release = threading.Event(), threading.Event()
    calls = []

    def renew() -> Grant:
        calls.append(1)
        started.set()
        release.wait(5)
        return Grant("shared", time.time() + 3600)

    tokens = Tokens("p1", renew, Recorder())
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(tokens.token())) for _ in range(8)]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert got == ["shared"] * 8 and len(calls) == 1
