"""A provider's history (ListProviderEvents): what is recorded, newest first, paged,
coalesced, capped, pruned by age, within the caller's scope, and never a secret.

The example `echo` driver stands in for mail servers (its spool directory removed
makes its checks fail); the outage of a real Dovecot is in test_receive.py, a
refused token renewal in test_oauth.py."""
from __future__ import annotations

import json
import time

import grpc
import mailgate_echo_driver
import pytest
from google.protobuf import json_format, struct_pb2
from sqlalchemy import func, select

from mailgate.drivers.api import CheckResult, ErrorCode, Outcome
from mailgate.server.providers.history import Event, EventType, problem_event
from mailgate.server.store.models import ProviderEventRow
from mailgate.testing.clock import FakeClock
from mailgate.testing.rpc import expect_error
from mailgate.v1 import (provider_event_pb2, provider_pb2, provider_service_pb2_grpc, token_service_pb2,
                         token_service_pb2_grpc, validation_pb2)
from mailgate.v1 import provider_service_pb2 as pb

from support import wait_provider

Provider = provider_pb2.Provider
PE = provider_event_pb2.ProviderEvent
Check = validation_pb2.Check
DAY = 86400


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def echo(server, name="Desk", spool=None, **fields) -> Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hi", "api_key": "let-me-in", **({"spool_dir": str(spool)} if spool else {})})
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=Provider(
        display_name=name, type="echo", account="desk@example.test", receive_emails=spool is not None,
        plugin_settings=settings, **fields)))


def events(server, name, stub=None, **request) -> list[PE]:
    """Every event of the provider, newest first, following the page tokens."""
    stub = stub or server.stub
    out, token = [], ""
    while True:
        page = stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=name, page_token=token, **request))
        out += page.provider_events
        token = page.next_page_token
        if not token:
            return out


def kinds(found: list[PE]) -> list[str]:
    return [PE.Type.Name(e.type).removeprefix("TYPE_") for e in found]


def record(server, *found: Event) -> None:
    server.call(server.app.history.record(*found))


def test_create_activate_and_failed_checks_are_recorded_newest_first(mailgate_server, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    p = echo(mailgate_server, spool=spool)
    [created] = events(mailgate_server, p.name)
    assert created.type == PE.TYPE_STATE_CHANGED and created.name.startswith(p.name + "/events/")
    assert (created.previous_state, created.state, created.state_cause) == (
        Provider.STATE_UNSPECIFIED, Provider.STATE_GREEN, Provider.STATE_CAUSE_CHECKS_PASSED)
    assert created.reason == "credentials checked at creation" and created.count == 1
    assert created.event_time.ToDatetime() >= p.create_time.ToDatetime()

    spool.rmdir()  # the source turns the provider RED by itself; activation then fails its check
    wait_provider(mailgate_server, p.name, Provider.STATE_RED)
    mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
    assert not mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(name=p.name)).report.ok
    found = events(mailgate_server, p.name)
    assert kinds(found) == ["CHECK_FAILED", "STATE_CHANGED", "CHECK_FAILED", "STATE_CHANGED", "STATE_CHANGED"]
    validation, activated, activation, down, _ = found
    assert (validation.check_id, validation.error_code) == ("spool.open", Check.ERROR_CODE_CONNECT_FAILED)
    assert validation.reason.startswith("validation: ") and "no such directory" in validation.reason
    assert activation.reason.startswith("activation: ")
    assert (activated.previous_state, activated.state, activated.state_cause) == (
        Provider.STATE_RED, Provider.STATE_RED, Provider.STATE_CAUSE_CHECKS_FAILED)
    assert (down.previous_state, down.state_cause) == (Provider.STATE_GREEN, Provider.STATE_CAUSE_MAILBOX_UNREACHABLE)
    times = [e.event_time.ToDatetime() for e in found]
    assert times == sorted(times, reverse=True)
    assert [e.type for e in events(mailgate_server, p.name, filter="type = TYPE_CHECK_FAILED")] == [
        PE.TYPE_CHECK_FAILED] * 2


def test_pages_follow_each_other_bound_to_their_provider_and_filter(mailgate_server):
    p, other = echo(mailgate_server), echo(mailgate_server, "Other")
    pid = p.name.removeprefix("providers/")
    record(mailgate_server, *[Event(pid, EventType.AUTHORIZATION_STARTED, f"sign-in {i}") for i in range(7)])
    first = mailgate_server.stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=p.name, page_size=3))
    assert [e.reason for e in first.provider_events] == ["sign-in 6", "sign-in 5", "sign-in 4"]
    assert [e.reason for e in events(mailgate_server, p.name, page_size=3)] == (
        [f"sign-in {i}" for i in range(6, -1, -1)] + ["credentials checked at creation"])
    assert len(events(mailgate_server, p.name, page_size=3, filter='type = "STATE_CHANGED"')) == 1

    for request, field in ((pb.ListProviderEventsRequest(parent=other.name, page_token=first.next_page_token),
                            "page_token"),
                           (pb.ListProviderEventsRequest(parent=p.name, page_token=first.next_page_token,
                                                         filter="type = TYPE_RECONNECT"), "page_token"),
                           (pb.ListProviderEventsRequest(parent=p.name, filter="type = TYPE_SLEEPING"), "filter"),
                           (pb.ListProviderEventsRequest(parent="providers/a/b"), "parent")):
        err = expect_error(lambda: mailgate_server.stub.ListProviderEvents(request))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.violations, request
    err = expect_error(lambda: mailgate_server.stub.ListProviderEvents(pb.ListProviderEventsRequest(
        parent="providers/nope")))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_reconnects_are_coalesced_to_one_event_a_minute_with_their_count(mailgate_server):
    p = echo(mailgate_server)
    pid = p.name.removeprefix("providers/")
    history = mailgate_server.app.history
    history.clock = clock = FakeClock(time.time())

    def reconnect(message: str) -> Event:
        c = CheckResult("imap.connect", "imap", "127.0.0.1", 993, Outcome.FAILED, ErrorCode.CONNECT_FAILED, message)
        return problem_event(pid, EventType.RECONNECT, c, f"cannot connect: {message}")

    def reconnects() -> list[tuple[int, str]]:
        return [(e.count, e.reason) for e in events(mailgate_server, p.name, filter="type = TYPE_RECONNECT")]

    record(mailgate_server, *[reconnect(f"refused {i}") for i in range(10)])  # ten in the same second
    assert reconnects() == [(1, "cannot connect: refused 0")]  # the first at once, the others held
    mailgate_server.call(history.flush())
    assert len(reconnects()) == 1  # the minute has not passed
    clock.now += 61
    mailgate_server.call(history.flush())
    assert reconnects() == [(9, "cannot connect: refused 9"), (1, "cannot connect: refused 0")]
    clock.now += 30
    record(mailgate_server, reconnect("refused 10"))  # held: a minute since the flush's event has not passed
    clock.now += 31
    record(mailgate_server, reconnect("refused 11"))  # the window has passed: written with what it held
    assert reconnects()[0] == (2, "cannot connect: refused 11")
    record(mailgate_server, reconnect("refused 12"))
    mailgate_server.call(history.flush(everything=True))  # as at shutdown: nothing held is lost
    assert [n for n, _ in reconnects()] == [1, 2, 9, 1]
    [event] = events(mailgate_server, p.name, filter="type = TYPE_RECONNECT", page_size=1)[:1]
    assert (event.check_id, event.error_code) == ("imap.connect", Check.ERROR_CODE_CONNECT_FAILED)


def test_each_type_keeps_its_newest_events_up_to_the_cap(mailgate_server):
    p = echo(mailgate_server)
    pid = p.name.removeprefix("providers/")
    mailgate_server.app.history.cap = 5
    record(mailgate_server, *[Event(pid, EventType.AUTHORIZATION_STARTED, f"sign-in {i}") for i in range(8)])
    record(mailgate_server, Event(pid, EventType.AUTHORIZATION_FAILED, "refused"))
    assert [e.reason for e in events(mailgate_server, p.name)] == (
        ["refused"] + [f"sign-in {i}" for i in range(7, 2, -1)] + ["credentials checked at creation"])


def test_events_older_than_the_retention_are_pruned(mailgate_server):
    p = echo(mailgate_server)
    history = mailgate_server.app.history
    assert history.retention.days == 30  # MAILGATE_EVENT_RETENTION_DAYS' default
    history.clock = clock = FakeClock(time.time() + 29 * DAY)
    assert mailgate_server.call(history.prune()) == 0
    clock.now += 2 * DAY
    record(mailgate_server, Event(p.name.removeprefix("providers/"), EventType.AUTHORIZATION_STARTED, "recent"))
    assert mailgate_server.call(history.prune()) == 1
    assert [e.reason for e in events(mailgate_server, p.name)] == ["recent"]


def test_a_deleted_providers_events_go_with_it(mailgate_server):
    p = echo(mailgate_server)
    pid = p.name.removeprefix("providers/")

    def stored() -> int:
        return mailgate_server.call(mailgate_server.app.db.run(lambda s: s.scalar(
            select(func.count()).select_from(ProviderEventRow).where(ProviderEventRow.provider_id == pid))))
    assert stored() == 1
    mailgate_server.stub.DeleteProvider(pb.DeleteProviderRequest(name=p.name))
    assert stored() == 0
    record(mailgate_server, Event(pid, EventType.TOKEN_RENEWED, "late"))  # from a renewal under way: dropped
    assert stored() == 0
    err = expect_error(lambda: mailgate_server.stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=p.name)))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_a_scoped_caller_sees_the_events_of_its_providers_only(mailgate_server):
    mine, theirs = echo(mailgate_server, campaign="sales"), echo(mailgate_server, "Billing", campaign="billing")
    tokens = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    secret = tokens.CreateToken(token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
        display_name="sales desk", permissions=["providers.read"], campaigns=["sales"]))).secret
    with mailgate_server.open_channel(secret) as channel:
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        assert kinds(events(mailgate_server, mine.name, stub=stub)) == ["STATE_CHANGED"]
        for name in (theirs.name, "providers/nope"):  # out of scope answers as what does not exist
            err = expect_error(lambda: stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=name)))
            assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.info.metadata["permission"] == "providers.read"


@pytest.mark.logs_secrets
def test_a_secret_in_a_reason_is_redacted_before_it_is_stored(mailgate_server):
    p = echo(mailgate_server)
    pid = p.name.removeprefix("providers/")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXZhbHVl"
    record(mailgate_server, Event(pid, EventType.AUTHORIZATION_FAILED,
                                  f"sign-in failed: password=hunter2-secret token {jwt} " + "x" * 5000))
    [event, _] = events(mailgate_server, p.name)
    shown = json.dumps(json_format.MessageToDict(event))
    assert "hunter2-secret" not in shown and jwt not in shown and "[REDACTED]" in shown
    assert len(event.reason) < 2100  # cut: a reason is bounded too
