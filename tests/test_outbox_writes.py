"""The outbox's group commit: SendEmail calls and attempt results that arrive
together share one transaction, and sharing changes nothing a caller can see.

Store level (GroupCommit over a real database, on every engine), then through a
running server (concurrent retries, a provider changed behind SendEmail's cache)."""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mailgate.drivers.api import ProviderConfig
from mailgate.server.outbound.compose import Draft
from mailgate.server.providers.state import Cause, State, Status
from mailgate.server.outbound.outbox import GroupCommit
from mailgate.server.secrets import SecretBox
from mailgate.server.store.db import Database
from mailgate.server.store.models import OutboundRow, ProviderRow
from mailgate.server.outbound.store import (STALE, Claimed, Duplicate, Finish, LeaseLost, NewOutbound,
                                            OutboxStore, OutState)
from mailgate.server.providers.store import ProviderStore
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.testing.servers.smtpd import SmtpServer
from mailgate.v1 import mail_service_pb2 as mpb

from support import USER, mail, make_provider, parse, wait_state


@pytest.fixture
def store(mailgate_database_url):
    db = Database(mailgate_database_url)
    db.upgrade()
    box = SecretBox(os.urandom(32))
    config = ProviderConfig(id=str(uuid.uuid4()), type="smtp_imap", display_name="Desk", account=USER,
                            settings={"smtp": {"host": "127.0.0.1", "port": 25, "security": "NONE"},
                                      "allow_plaintext_login": True},
                            secrets={"password": "x"})
    db.transaction(lambda s: ProviderStore(s, box).insert(config, Status(State.GREEN, Cause.CHECKS_PASSED, "ok")))
    _, fingerprint = db.transaction(lambda s: ProviderStore(s, box).get_with_fingerprint(config.id))
    yield db, config.id, fingerprint
    db.close()


def new(provider_id: str, fingerprint, request_id: str | None = None, **changes) -> NewOutbound:
    now = datetime.now(timezone.utc)
    values = dict(
        id=str(uuid.uuid4()), provider_id=provider_id, request_id=request_id,
        message_id=f"<{uuid.uuid4()}@example.test>", conversation_id=str(uuid.uuid4()), state="QUEUED",
        mail_from=USER, to=["jane@example.test"], cc=[], bcc=["hidden@example.test"], subject="s",
        attachments=[{"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 3}],
        raw=b"Subject: s\r\n\r\nx\r\n", size_bytes=17, attempts=0, next_attempt_time=now,
        lease_until=now + timedelta(seconds=120), lease_token=str(uuid.uuid4()), last_code=0, last_error="",
        last_transient=False, create_time=now, update_time=now, sent_time=None)
    values.update(changes)
    return NewOutbound(values, ["<root@example.test>"], (provider_id, fingerprint))


def together(writer: GroupCommit, ops) -> list:
    """Submits every op at once (as concurrent SendEmail calls do); results or exceptions."""
    async def run():
        return await asyncio.gather(*(writer(op) for op in ops), return_exceptions=True)
    return asyncio.run(run())


def stored(db: Database, message_id: str):
    return db.transaction(lambda s: OutboxStore(s).get(message_id))


def test_writes_that_arrive_together_share_one_transaction(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    ops = [new(pid, fingerprint) for _ in range(10)]
    results = together(writer, ops)
    assert writer.batches == 1 and writer.writes == 10
    for op, r in zip(ops, results):
        assert isinstance(r, Claimed) and r.raw == op.values["raw"]
        assert r.message == stored(db, op.values["id"])  # what the caller gets is what is stored
        assert r.message.state is OutState.QUEUED and r.message.bcc == ("hidden@example.test",)
    assert db.transaction(lambda s: OutboxStore(s).thread(ops[0].values["message_id"])) == (
        ops[0].values["conversation_id"], ("<root@example.test>",))


def test_a_commit_waits_for_the_writes_on_their_way(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db, delay=0.5, expected=lambda: 2)  # two writers at work

    async def run():
        first = asyncio.ensure_future(writer(new(pid, fingerprint)))
        await asyncio.sleep(0.1)  # the second comes a little later, within the delay
        return await asyncio.gather(first, writer(new(pid, fingerprint)))

    assert all(isinstance(r, Claimed) for r in asyncio.run(run()))
    assert writer.batches == 1 and writer.writes == 2


def test_a_write_with_no_company_on_its_way_is_committed_at_once(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db, delay=30, expected=lambda: 1)  # the write itself, nobody else

    async def run():
        return await asyncio.wait_for(writer(new(pid, fingerprint)), 10)  # not after the 30 s delay

    assert isinstance(asyncio.run(run()), Claimed)
    assert writer.batches == 1


def test_large_messages_share_a_transaction_only_up_to_a_size(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db, max_batch_bytes=40)  # each test message is 17 bytes
    results = together(writer, [new(pid, fingerprint) for _ in range(5)])
    assert all(isinstance(r, Claimed) for r in results)
    assert writer.batches == 3 and writer.writes == 5  # 2 + 2 + 1


def test_a_request_id_is_stored_once_within_a_batch_and_across_batches(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    [first] = together(writer, [new(pid, fingerprint, "r1")])
    retry, other, same_batch = together(writer, [new(pid, fingerprint, "r1"), new(pid, fingerprint, "r2"),
                                                 new(pid, fingerprint, "r2")])
    assert isinstance(retry, Duplicate) and retry.first == first.message
    assert isinstance(other, Claimed)
    assert isinstance(same_batch, Duplicate) and same_batch.first == other.message
    listed = db.transaction(lambda s: OutboxStore(s).list({"provider_id": pid}, None, 10))
    assert sorted(m.request_id for m in listed) == ["r1", "r2"]


def test_one_bad_write_fails_alone_and_the_others_are_stored(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    good1, bad, good2 = new(pid, fingerprint), new(pid, fingerprint, subject=None), new(pid, fingerprint)
    r1, rbad, r2 = together(writer, [good1, bad, good2])
    assert isinstance(rbad, IntegrityError)  # subject is NOT NULL
    assert isinstance(r1, Claimed) and isinstance(r2, Claimed)
    assert stored(db, good1.values["id"]).state is OutState.QUEUED
    assert stored(db, good2.values["id"]).state is OutState.QUEUED
    listed = db.transaction(lambda s: OutboxStore(s).list({"provider_id": pid}, None, 10))
    assert len(listed) == 2


def test_a_message_composed_from_a_changed_provider_is_not_stored(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    db.transaction(lambda s: s.execute(update(ProviderRow).where(ProviderRow.id == pid)
                                       .values(version=ProviderRow.version + 1)))
    stale, unchecked = together(writer, [new(pid, fingerprint), replace(new(pid, fingerprint), provider=None)])
    assert stale is STALE and isinstance(unchecked, Claimed)
    listed = db.transaction(lambda s: OutboxStore(s).list({"provider_id": pid}, None, 10))
    assert [m.id for m in listed] == [unchecked.message.id]


def test_results_recorded_together_are_what_is_stored(store):
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    ca, cb, cc = together(writer, [new(pid, fingerprint) for _ in range(3)])
    a, b, c = ca.message, cb.message, cc.message
    now = datetime.now(timezone.utc)
    later = now + timedelta(seconds=30)
    sent, retrying, held = together(writer, [
        Finish(a, ca.lease, now, OutState.SENT, code=250),
        Finish(b, cb.lease, now, OutState.RETRYING, next_attempt=later, code=451, error="try later", transient=True),
        Finish(c, cc.lease, now, OutState.RETRYING, counted=False, next_attempt=later, error="provider deleted")])
    assert writer.batches == 2
    for got in (sent, retrying, held):
        assert got == stored(db, got.id)
    assert (sent.state, sent.attempts, sent.last_code, sent.sent_time, sent.next_attempt_time) == (
        OutState.SENT, 1, 250, now, None)
    assert (retrying.attempts, retrying.next_attempt_time, retrying.last_error, retrying.last_transient,
            retrying.sent_time) == (1, later, "try later", True, None)
    assert held.attempts == 0
    # The lease is given back: the worker may claim what is due.
    due = db.transaction(lambda s: OutboxStore(s).claim_due(later, 10, timedelta(seconds=60)))
    assert sorted(c.message.id for c in due) == sorted([b.id, c.id])


def test_a_result_is_recorded_only_under_the_lease_that_made_the_attempt(store):
    """An attempt that outlived its lease (the message claimed again meanwhile) records
    nothing, renews nothing and gives nothing back, beside results of others in the
    same transaction; the attempt holding the lease does."""
    db, pid, fingerprint = store
    writer = GroupCommit(db)
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    first, other = together(writer, [new(pid, fingerprint), new(pid, fingerprint, next_attempt_time=tomorrow)])
    expired = first.lease_until + timedelta(seconds=1)
    [second] = db.transaction(lambda s: OutboxStore(s).claim_due(expired, 10, timedelta(seconds=60)))
    assert second.message.id == first.message.id
    assert second.lease != first.lease and second.lease_until == expired + timedelta(seconds=60)

    now = datetime.now(timezone.utc)
    assert db.transaction(lambda s: OutboxStore(s).renew([(first.message.id, first.lease)], expired)) == set()
    db.transaction(lambda s: OutboxStore(s).postpone(first.message.id, first.lease, now + timedelta(days=1)))
    late, alongside = together(writer, [Finish(first.message, first.lease, now, OutState.FAILED, code=550,
                                               error="refused"),
                                        Finish(other.message, other.lease, now, OutState.SENT, code=250)])
    assert isinstance(late, LeaseLost) and late.current == stored(db, first.message.id)
    assert late.current.state is OutState.QUEUED and late.current.attempts == 0
    assert late.current.next_attempt_time == first.message.next_attempt_time  # not postponed either
    assert alongside == stored(db, other.message.id) and alongside.state is OutState.SENT

    later = second.lease_until - timedelta(seconds=1)
    assert db.transaction(lambda s: OutboxStore(s).renew([(second.message.id, second.lease)], later)) == {
        second.message.id}
    [done] = together(writer, [Finish(second.message, second.lease, now, OutState.SENT, code=250)])
    assert done == stored(db, first.message.id) and (done.state, done.attempts) == (OutState.SENT, 1)
    # A result recorded gives the lease back: renewing it now keeps nothing.
    assert db.transaction(lambda s: OutboxStore(s).renew([(second.message.id, second.lease)], later)) == set()


# --- through the server ----------------------------------------------------------------

@pytest.fixture
def smtp(mail_ca, mail_users):
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as server:
        yield server


def test_concurrent_calls_with_one_request_id_send_once(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    outbox = mailgate_server.app.outbox
    pid = p.name.removeprefix("providers/")
    draft = Draft(to=("jane@example.test",), subject="once", text_body="x")

    async def three():
        return await asyncio.gather(*(outbox.send(pid, draft, request_id="same") for _ in range(3)))

    results = mailgate_server.call(three())
    assert len({m.id for m in results}) == 1
    smtp.wait_for_messages(1)
    time.sleep(0.2)  # the duplicates' first attempts, made while inserting, handed nothing over
    assert len(smtp.messages) == 1
    listed = mail(mailgate_server).ListOutboundMessages(mpb.ListOutboundMessagesRequest())
    assert len(listed.outbound_messages) == 1


def test_a_provider_changed_behind_sendemails_back_is_read_again(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca, from_name="Old name")
    stub = mail(mailgate_server)
    stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="1", text_body="x"))
    # Another process (a second server on the same database) renames the provider:
    # this one hears nothing of it, and must not send from its cached copy.
    pid = p.name.removeprefix("providers/")
    app = mailgate_server.app
    mailgate_server.call(app.db.run(lambda s: s.execute(update(ProviderRow).where(ProviderRow.id == pid).values(
        from_name="New name", version=ProviderRow.version + 1))))
    sent = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="2",
                                               text_body="x"))
    assert sent.state == mpb.OutboundMessage.STATE_SENT
    first, second = (parse(m.content) for m in smtp.wait_for_messages(2))
    assert first["From"] == f"Old name <{USER}>" and second["From"] == f"New name <{USER}>"
    # And turned RED over there: refused here, as for a change made here.
    mailgate_server.call(app.db.run(lambda s: s.execute(update(ProviderRow).where(ProviderRow.id == pid).values(
        state="RED", state_reason="elsewhere", version=ProviderRow.version + 1))))
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="3", text_body="x")))
    assert "RED" in err.violations["provider"]


def test_a_server_changed_behind_sendemails_back_gets_the_mail(mailgate_server, smtp, mail_ca, mail_users):
    """As above, for the SMTP server itself: the idle pooled connection to the old one
    must not carry the provider's mail once the stored settings name another."""
    p = make_provider(mailgate_server, smtp, mail_ca)
    stub = mail(mailgate_server)
    stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="1", text_body="x"))
    pid = p.name.removeprefix("providers/")
    app = mailgate_server.app
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as other:
        row = mailgate_server.call(app.db.run(lambda s: s.get(ProviderRow, pid)))
        moved = dict(row.settings, smtp={"host": other.host, "port": other.port, "security": "STARTTLS"})
        mailgate_server.call(app.db.run(lambda s: s.execute(update(ProviderRow).where(ProviderRow.id == pid).values(
            settings=moved, version=ProviderRow.version + 1))))
        sent = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="2",
                                                   text_body="x"))
        assert sent.state == mpb.OutboundMessage.STATE_SENT
        assert [parse(m.content)["Subject"] for m in other.messages] == ["2"]
    assert [parse(m.content)["Subject"] for m in smtp.messages] == ["1"]


def test_sendemail_answers_queued_when_the_first_attempt_is_slow(tmp_path, mailgate_database_url, mail_ca,
                                                                 mail_users):
    def slow(raw: bytes, rcpts: list[str]) -> None:  # the server takes its time before its 250
        time.sleep(1.0)

    settings = make_settings(tmp_path, mailgate_database_url, first_attempt_wait=0.2)
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca, deliver_to=slow) as smtp, ServerThread(settings) as server:
        p = make_provider(server, smtp, mail_ca)
        m = mail(server).SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="slow",
                                                        text_body="x"))
        assert m.state == mpb.OutboundMessage.STATE_QUEUED and m.attempts == 0
        done = wait_state(server, m.name, mpb.OutboundMessage.STATE_SENT)  # the attempt went on
        assert done.state == mpb.OutboundMessage.STATE_SENT and done.attempts == 1
        assert len(smtp.messages) == 1


def test_a_lone_sendemail_is_never_held_by_the_commit_delay(tmp_path, mailgate_database_url, smtp, mail_ca):
    """The delay is for writes on their way; a lone call's own first attempt is not one
    of them (it waits for the insert), so neither the insert nor its result waits."""
    with ServerThread(make_settings(tmp_path, mailgate_database_url, commit_delay=30.0)) as server:
        p = make_provider(server, smtp, mail_ca)
        for subject in ("first", "second"):
            m = mail(server).SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"],
                                                            subject=subject, text_body="x"), timeout=10)
            assert m.state == mpb.OutboundMessage.STATE_SENT  # within first_attempt_wait (5 s)


def test_the_smtp_server_takes_a_message_only_once_it_is_stored(tmp_path, mailgate_database_url, mail_ca,
                                                                 mail_users, monkeypatch):
    """The first attempt starts while the message is being committed (the SMTP
    exchange overlaps the commit); the end of its data waits for the commit."""
    reader = Database(mailgate_database_url)  # another connection: sees committed rows only
    states: list[str | None] = []

    def deliver(raw: bytes, rcpts: list[str]) -> None:  # at the end of the data
        message_id = parse(raw)["Message-ID"]
        states.append(reader.transaction(lambda s: s.scalar(
            select(OutboundRow.state).where(OutboundRow.message_id == message_id))))

    write = OutboxStore.write

    def slow_write(self, ops):
        results = write(self, ops)
        if any(isinstance(op, NewOutbound) for op in ops):
            time.sleep(0.3)  # inserted, not committed yet
        return results

    monkeypatch.setattr(OutboxStore, "write", slow_write)
    settings = make_settings(tmp_path, mailgate_database_url)
    try:
        with SmtpServer("STARTTLS", dict(mail_users), mail_ca, deliver_to=deliver) as smtp, \
                ServerThread(settings) as server:
            p = make_provider(server, smtp, mail_ca)
            sent = mail(server).SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"],
                                                               subject="stored first", text_body="x"))
            assert sent.state == mpb.OutboundMessage.STATE_SENT
            assert states == ["QUEUED"]
    finally:
        reader.close()


def test_a_message_that_could_not_be_stored_is_not_sent(mailgate_server, smtp, mail_ca, monkeypatch):
    p = make_provider(mailgate_server, smtp, mail_ca)
    write = OutboxStore.write

    def failing_write(self, ops):
        if any(isinstance(op, NewOutbound) and op.values["subject"] == "doomed" for op in ops):
            raise IntegrityError("INSERT", {}, Exception("disk says no"))
        return write(self, ops)

    monkeypatch.setattr(OutboxStore, "write", failing_write)
    stub = mail(mailgate_server)
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="doomed", text_body="x")))
    assert err.code == grpc.StatusCode.INTERNAL
    sent = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="fine",
                                               text_body="x"))
    assert sent.state == mpb.OutboundMessage.STATE_SENT
    smtp.wait_for_messages(1)
    time.sleep(0.2)
    assert [parse(m.content)["Subject"] for m in smtp.messages] == ["fine"]
    listed = stub.ListOutboundMessages(mpb.ListOutboundMessagesRequest())
    assert [m.subject for m in listed.outbound_messages] == ["fine"]
