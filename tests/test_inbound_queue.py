"""The campaign queue through InboundService: mail committed as a watcher commits
it, consumed over StreamInboundMail with acknowledgements."""
from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import time
from email.message import EmailMessage

import grpc
import pytest
from sqlalchemy import select
from google.protobuf import struct_pb2

import mailgate_echo_driver
from mailgate.server.inbound.queue import Subscription
from mailgate.server.store.models import InboundRow
from mailgate.testing.consumer import Consumer
from mailgate.testing.rpc import expect_error
from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

Msg = ipb.InboundMessage


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def make_provider(server, name="Inbox", campaign="billing", **fields) -> str:
    s = struct_pb2.Struct()
    s.update({"greeting": "hi", "api_key": "let-me-in"})
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name=name, type="echo", account="inbox@example.test", campaign=campaign,
        plugin_settings=s, **fields))).name


def mail(n: int, **headers) -> bytes:
    m = EmailMessage()
    m["From"] = "Customer <c@example.test>"
    m["To"] = "inbox@example.test"
    m["Subject"] = headers.pop("subject", f"message {n}")
    m["Message-ID"] = headers.pop("message_id", f"<m{n}.{time.monotonic_ns()}@example.test>")
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(f"body {n}")
    return bytes(m)


def commit(server, provider: str, messages: list[tuple[int, bytes]], uidvalidity=1, folder="INBOX"):
    """What a mailbox watcher does when it has fetched messages."""
    return server.app.inbound.commit(provider.split("/")[1], folder, uidvalidity, messages)


def get(server, name: str, **flags) -> Msg:
    return inbound_service_pb2_grpc.InboundServiceStub(server.channel).GetInboundMessage(
        ipb.GetInboundMessageRequest(name=name, **flags))


def test_committed_mail_streams_in_order_with_parsed_fields(mailgate_server):
    p = make_provider(mailgate_server)
    c = Consumer(mailgate_server)
    try:
        raws = [mail(i) for i in range(3)]
        commit(mailgate_server, p, list(enumerate(raws, start=1)))
        got = c.take(3)
        assert [r.message.subject for r in got] == ["message 0", "message 1", "message 2"]
        first = got[0].message
        assert first.provider == p and first.campaign == "billing" and first.delivery_count == 1
        assert list(first.__getattribute__("from")) == ["Customer <c@example.test>"]
        assert first.text_body.strip() == "body 0" and first.state == Msg.STATE_DELIVERED
        c.ack(*got)
        time.sleep(0.3)
        assert get(mailgate_server, first.name).state == Msg.STATE_ACKNOWLEDGED
        assert get(mailgate_server, first.name, include_raw=True).raw == raws[0]
    finally:
        c.close()


def alive(pid: int) -> bool:
    """A process that still runs (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, its stat was read
        return False


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_mail_is_parsed_in_worker_processes_and_a_dead_worker_loses_nothing(mailgate_server, caplog):
    parsers = mailgate_server.app.inbound.parsers
    assert parsers.workers >= 1  # the default on a machine with more than one core
    p = make_provider(mailgate_server)
    c = Consumer(mailgate_server)
    try:
        commit(mailgate_server, p, [(1, mail(1))])
        [first] = c.take()
        workers = parsers.pids()
        assert workers and os.getpid() not in workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(pid) for pid in workers))
        commit(mailgate_server, p, [(2, mail(2)), (3, mail(3))])  # headers parsed here, then a new pool
        got = c.take(2)
        assert [(r.message.subject, r.message.text_body.strip()) for r in [first, *got]] == [
            ("message 1", "body 1"), ("message 2", "body 2"), ("message 3", "body 3")]
        assert "a mail parsing process died; parsing 2 message(s) here" in caplog.text
        assert parsers.pids() and not set(parsers.pids()) & set(workers)  # started again
    finally:
        c.close()


def test_unacknowledged_mail_comes_back_after_the_deadline_and_after_a_disconnect(mailgate_server):
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1))])
    c1 = Consumer(mailgate_server, deadline=10)
    [first] = c1.take()
    c1.close()  # gone without acknowledging: back in the queue at once
    c2 = Consumer(mailgate_server)
    try:
        [again] = c2.take()
        assert again.message.name == first.message.name and again.message.delivery_count == 2
        assert again.ack_id != first.ack_id
        # the old delivery's ack does not acknowledge the new one
        AckOld = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel).AckInboundMail
        AckOld(ipb.AckInboundMailRequest(ack_ids=[first.ack_id]))
        assert get(mailgate_server, again.message.name).state == Msg.STATE_DELIVERED
        # a deadline of 0 gives it back; it comes again on the same stream
        c2.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[again.ack_id],
                                                     modify_deadline_seconds=[0]))
        [third] = c2.take()
        assert third.message.delivery_count == 3
    finally:
        c2.close()


def test_mail_a_consumer_leaves_behind_reaches_a_waiting_one_at_once(mailgate_server):
    """Not at the waiting stream's next look for expired leases (a minute here): the
    release wakes it, as a commit does."""
    mailgate_server.app.inbound.settings.sweep_interval = 60
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1))])
    c1 = Consumer(mailgate_server, name="first")
    [first] = c1.take()
    c2 = Consumer(mailgate_server, name="second")
    try:
        assert c2.nothing(0.5)  # subscribed, found the queue empty, and waits
        c1.close()
        [again] = c2.take(timeout=5)
        assert again.message.name == first.message.name and again.message.delivery_count == 2
    finally:
        c2.close()


def test_leases_given_back_by_a_cancelled_call_still_wake_the_waiting(mailgate_server):
    """A consumer's call may be cancelled while its leases are being given back: the
    release commits anyway, and the consumers waiting on the campaign hear of it."""
    app = mailgate_server.app
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1))])
    sub = Subscription(campaign="billing", provider_ids=[], consumer="c", max_in_flight=1, deadline=60)

    async def scenario() -> bool:
        waiting = asyncio.Event()
        app.inbound.subscribe(sub.topics, waiting)
        _, [d] = await app.inbound.claim(sub, 1)
        releasing = asyncio.ensure_future(app.inbound.release([(d.message.id, d.token)]))
        await asyncio.sleep(0)  # under way in the database thread
        releasing.cancel()
        await app.inbound.drain()
        app.inbound.unsubscribe(sub.topics, waiting)
        await asyncio.sleep(0)  # the wake-up is scheduled on the loop
        return waiting.is_set()

    assert mailgate_server.call(scenario())
    assert get(mailgate_server, f"inboundMessages/{_first_id(mailgate_server)}").state == Msg.STATE_QUEUED


def _first_id(server) -> str:
    return server.app.db.run_sync(lambda s: s.scalar(select(InboundRow.id)))


def test_mail_committed_while_a_stream_looks_is_not_missed(mailgate_server, monkeypatch):
    """The wake-up of a commit that lands between a claim's look and the stream's sleep
    is kept: the stream looks again at once, not at its next sweep (a minute here)."""
    app = mailgate_server.app
    app.inbound.settings.sweep_interval = 60
    p = make_provider(mailgate_server)
    looked = []
    claim = app.inbound.claim

    async def claim_then_commit(sub, limit, **kwargs):
        found = await claim(sub, limit, **kwargs)
        if not looked:  # the first look found nothing; mail is committed before the stream sleeps
            looked.append(found[1])
            await asyncio.to_thread(commit, mailgate_server, p, [(1, mail(1))])
        return found

    monkeypatch.setattr(app.inbound, "claim", claim_then_commit)
    c = Consumer(mailgate_server)
    try:
        [got] = c.take(timeout=5)
        assert looked == [[]] and got.message.subject == "message 1"
    finally:
        c.close()


def test_expired_lease_is_redelivered(mailgate_server):
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1))])
    c = Consumer(mailgate_server, deadline=10)
    try:
        [first] = c.take()
        # Pretend the deadline passed (a 10 s minimum deadline is too slow for a test).
        c.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[first.ack_id],
                                                    modify_deadline_seconds=[1]))
        [again] = c.take(timeout=5)
        assert again.message.name == first.message.name and again.message.delivery_count == 2
    finally:
        c.close()


def test_two_consumers_never_hold_the_same_message(mailgate_server):
    p = make_provider(mailgate_server)
    a, b = Consumer(mailgate_server, max_in_flight=3, name="a"), Consumer(mailgate_server, max_in_flight=3, name="b")
    try:
        commit(mailgate_server, p, [(i, mail(i)) for i in range(1, 7)])
        got_a, got_b = a.take(3), b.take(3)
        names_a = {r.message.name for r in got_a}
        names_b = {r.message.name for r in got_b}
        assert len(names_a | names_b) == 6 and not names_a & names_b
        assert a.nothing(0.3) and b.nothing(0.3)  # max_in_flight holds the rest back
    finally:
        a.close()
        b.close()


def test_dead_letter_after_five_failed_attempts_and_requeue(mailgate_server):
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1))])
    c = Consumer(mailgate_server)
    try:
        for _ in range(5):  # the default: 5 failed attempts
            [r] = c.take()
            name = r.message.name
            c.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[r.ack_id],
                                                        modify_deadline_seconds=[0]))
        assert c.nothing(0.5)  # dead letters are not delivered
        stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
        dead = stub.ListInboundMessages(ipb.ListInboundMessagesRequest(filter="state = STATE_DEAD_LETTER"))
        assert [m.name for m in dead.inbound_messages] == [name]
        back = stub.RequeueInboundMessage(ipb.RequeueInboundMessageRequest(name=name))
        assert back.state == Msg.STATE_QUEUED and back.delivery_count == 0
        [r] = c.take()
        assert r.message.name == name and r.message.delivery_count == 1
        err = expect_error(lambda: stub.RequeueInboundMessage(ipb.RequeueInboundMessageRequest(name=name)))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        c.close()


def test_queued_once_by_uid_and_across_a_uidvalidity_change(mailgate_server):
    p = make_provider(mailgate_server)
    a, b = mail(1), mail(2)
    same_id_other_content = mail(3, message_id="<shared@example.test>", subject="first")
    reused_id = mail(4, message_id="<shared@example.test>", subject="second, same Message-ID")
    no_id = mail(5).replace(b"Message-ID", b"X-No-ID")
    assert commit(mailgate_server, p, [(1, a), (2, b), (3, same_id_other_content), (4, reused_id), (5, no_id)])
    assert commit(mailgate_server, p, [(1, a), (2, b)]) == []           # the same UIDs again
    assert commit(mailgate_server, p, [(10, a), (11, b), (12, no_id)], uidvalidity=2) == []  # a resync
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    listed = stub.ListInboundMessages(ipb.ListInboundMessagesRequest(filter=f'provider = "{p}"'))
    assert len(listed.inbound_messages) == 5
    assert mailgate_server.app.inbound.position(p.split("/")[1], "INBOX") == (2, 12)


def test_replies_join_the_conversation_of_known_mail(mailgate_server):
    p = make_provider(mailgate_server, active_reference=True)
    first = mail(1, message_id="<thread-root@example.test>")
    reply = mail(2, in_reply_to="<thread-root@example.test>", references="<thread-root@example.test>")
    stranger = mail(3, in_reply_to="<unknown@example.test>")
    commit(mailgate_server, p, [(1, first), (2, reply), (3, stranger)])
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    listed = stub.ListInboundMessages(ipb.ListInboundMessagesRequest()).inbound_messages
    by_subject = {m.subject: m for m in listed}
    assert by_subject["message 2"].conversation_id == by_subject["message 1"].conversation_id
    assert by_subject["message 3"].conversation_id != by_subject["message 1"].conversation_id


def test_subscription_errors_are_named(mailgate_server):
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    call = stub.StreamInboundMail(iter([ipb.StreamInboundMailRequest(consumer="x")]))
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_hostile_mail_is_queued_whole_and_readable(mailgate_server):
    from mailgate.testing import corpus
    p = make_provider(mailgate_server)
    items = list(corpus.everything())
    queued = commit(mailgate_server, p, [(uid, raw) for uid, (_, raw) in enumerate(items, start=1)])
    raws = {raw for _, raw in items}
    assert len(queued) == len(raws)  # identical corpus entries are one message
    for mid in queued:
        m = get(mailgate_server, f"inboundMessages/{mid}", include_raw=True, include_attachment_data=True)
        assert m.raw in raws  # the exact bytes, whatever could be parsed


def test_a_30_mb_attachment_is_queued_and_read_back_intact(mailgate_server):
    from mailgate.testing import corpus
    p = make_provider(mailgate_server)
    _, raw = corpus.huge_attachment()
    [mid] = commit(mailgate_server, p, [(1, raw)])
    m = get(mailgate_server, f"inboundMessages/{mid}", include_raw=True, include_attachment_data=True)
    assert m.raw == raw and m.size_bytes == len(raw) and not m.oversized
    [att] = m.attachments
    assert att.data == corpus.huge_attachment_payload()


def test_two_consumers_with_large_windows_share_a_burst_exactly_once(mailgate_server):
    # Claims take a consumer's whole free window in one statement per state: two windows
    # of 100 over 400 messages never overlap, and acknowledging frees room for more.
    p = make_provider(mailgate_server)
    a = Consumer(mailgate_server, max_in_flight=100, name="a")
    b = Consumer(mailgate_server, max_in_flight=100, name="b")
    try:
        for first in range(1, 401, 100):
            commit(mailgate_server, p, [(uid, mail(uid)) for uid in range(first, first + 100)])
        seen: dict[str, list[str]] = {"a": [], "b": []}
        while len(seen["a"]) + len(seen["b"]) < 400:
            progress = False
            for name, c in (("a", a), ("b", b)):
                got = c.take_all(wait=0.3)
                assert len(got) <= 100  # never more than the window
                if got:
                    progress = True
                    seen[name] += [r.message.name for r in got]
                    assert [r.message.delivery_count for r in got] == [1] * len(got)
                    c.ack(*got)
            assert progress, f"stuck after {len(seen['a']) + len(seen['b'])} messages"
        assert len(set(seen["a"]) | set(seen["b"])) == 400 and not set(seen["a"]) & set(seen["b"])
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("include_raw", [False, True], ids=["parsed", "with raw bytes"])
def test_a_large_claim_goes_out_in_responses_of_about_a_megabyte(mailgate_server, include_raw):
    p = make_provider(mailgate_server)
    big = (b"y" * 998 + b"\n") * 100  # ~100 KB of body each
    commit(mailgate_server, p, [(n, mail(n) + big) for n in range(1, 31)])  # 3 MB, queued before anyone asks
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    requests: queue.Queue = queue.Queue()  # open until the end
    requests.put(ipb.StreamInboundMailRequest(campaign="billing", consumer="c", max_in_flight=50,
                                              include_raw=include_raw))
    call = stub.StreamInboundMail(iter(requests.get, None))
    responses = []
    try:
        for response in call:
            responses.append(response)
            if sum(len(r.received_messages) for r in responses) == 30:
                break
    finally:
        requests.put(None)
        call.cancel()
    subjects = [m.message.subject for r in responses for m in r.received_messages]
    assert subjects == [f"message {n}" for n in range(1, 31)]  # one claim, in order
    assert len(responses) >= 3 and max(r.ByteSize() for r in responses) < 1_300_000
    assert all(bool(m.message.raw) == include_raw for r in responses for m in r.received_messages)



def test_attachment_contents_are_read_with_one_parse_of_the_message(mailgate_server, monkeypatch):
    from mailgate.server.inbound import parse as inbound_parse
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "c@example.test", "inbox@example.test", "three files"
    m["Message-ID"] = "<three-files@example.test>"
    m.set_content("see attached")
    files = {f"f{i}.bin": bytes([i]) * (1000 + i) for i in range(3)}
    for name, data in files.items():
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    p = make_provider(mailgate_server)
    [mid] = commit(mailgate_server, p, [(1, bytes(m))])
    parses = []

    class Counting(inbound_parse.BytesParser):
        def parsebytes(self, *args, **kwargs):
            parses.append(1)
            return super().parsebytes(*args, **kwargs)
    monkeypatch.setattr(inbound_parse, "BytesParser", Counting)
    got = get(mailgate_server, f"inboundMessages/{mid}", include_attachment_data=True)
    assert {a.filename: a.data for a in got.attachments} == files
    assert len(parses) == 1



def test_list_filter_values_may_hold_AND_and_escaped_quotes(mailgate_server):
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    for campaign in ("Sales AND Support", 'say "hi"'):
        p = make_provider(mailgate_server, name=campaign, campaign=campaign)
        commit(mailgate_server, p, [(1, mail(1))])
    quoted = 'campaign = "say \\"hi\\"" AND state = STATE_QUEUED'
    for text, campaign in (('campaign = "Sales AND Support"', "Sales AND Support"), (quoted, 'say "hi"')):
        listed = stub.ListInboundMessages(ipb.ListInboundMessagesRequest(filter=text)).inbound_messages
        assert [m.campaign for m in listed] == [campaign]



def test_a_field_repeated_in_the_list_filter_is_refused_by_name(mailgate_server):
    stub = inbound_service_pb2_grpc.InboundServiceStub(mailgate_server.channel)
    err = expect_error(lambda: stub.ListInboundMessages(ipb.ListInboundMessagesRequest(
        filter='campaign = "a" AND campaign = "b"')))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign" in err.violations["filter"] and "more than once" in err.violations["filter"]



def test_stream_deliveries_carry_the_raw_bytes_when_the_subscription_asks(mailgate_server):
    p = make_provider(mailgate_server)
    raws = [mail(1), mail(2)]
    commit(mailgate_server, p, list(enumerate(raws, start=1)))
    with_raw = Consumer(mailgate_server, include_raw=True, name="with raw")
    try:
        got = with_raw.take(2)
        assert [r.message.raw for r in got] == raws
        assert got[0].message.text_body.strip() == "body 1"  # parsed as well
        with_raw.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[r.ack_id for r in got],
                                                           modify_deadline_seconds=[0, 0]))
    finally:
        with_raw.close()
    # given back, they came again to the same stream; its leaving puts them back in the queue
    assert wait_until(lambda: all(get(mailgate_server, r.message.name).state == Msg.STATE_QUEUED for r in got))
    without = Consumer(mailgate_server, name="without")
    try:
        got = without.take(2)
        assert [r.message.raw for r in got] == [b"", b""]
        assert [r.message.subject for r in got] == ["message 1", "message 2"]
    finally:
        without.close()



def test_acks_sent_with_AckInboundMail_free_the_stream_window(mailgate_server):
    """"Acknowledges from anywhere": acks that do not travel on the stream still make
    room in its window, at once (not at the next look for expired leases, a minute here)."""
    mailgate_server.app.inbound.settings.sweep_interval = 60
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(n, mail(n)) for n in range(1, 11)])
    c = Consumer(mailgate_server, max_in_flight=5)
    try:
        first = c.take(5)
        assert c.nothing(0.3)  # the window is full
        c.ack_committed(*first)
        second = c.take(5, timeout=5)
        assert [r.message.subject for r in first + second] == [f"message {n}" for n in range(1, 11)]
    finally:
        c.close()



def test_a_window_full_of_expired_leases_is_delivered_again_then_dead_lettered(mailgate_server):
    """A sole consumer that lets every lease of its window expire gets them again (to
    dead_letter_after failed attempts), then the mail behind them."""
    app = mailgate_server.app
    app.inbound.settings.dead_letter_after = 2
    app.inbound.settings.sweep_interval = 0.2
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1)), (2, mail(2))])
    c = Consumer(mailgate_server, max_in_flight=1, deadline=10)

    def expire(r):  # a 10 s minimum deadline is too slow for a test
        c.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[r.ack_id], modify_deadline_seconds=[1]))
    try:
        [first] = c.take()
        expire(first)
        [again] = c.take(timeout=5)
        assert (again.message.name, again.message.delivery_count) == (first.message.name, 2)
        expire(again)
        [second] = c.take(timeout=5)  # the first was delivered twice: dead-lettered now
        assert second.message.subject == "message 2"
        assert get(mailgate_server, first.message.name).state == Msg.STATE_DEAD_LETTER
    finally:
        c.close()


def test_a_consumer_that_takes_mail_and_leaves_again_and_again_dead_letters_nothing(mailgate_server):
    """Leaving gives deliveries back untried: only a message given back (a deadline
    of 0) or let expire counts as a failed attempt."""
    mailgate_server.app.inbound.settings.dead_letter_after = 2
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(n, mail(n)) for n in range(1, 6)])
    for _ in range(4):
        greedy = Consumer(mailgate_server, max_in_flight=5, name="greedy")
        assert len(greedy.take(5)) == 5
        greedy.close()
    c = Consumer(mailgate_server, max_in_flight=5)
    try:
        got = c.take(5, timeout=5)
        assert [r.message.subject for r in got] == [f"message {n}" for n in range(1, 6)]
        assert {r.message.delivery_count for r in got} == {5}
        c.ack(*got)
    finally:
        c.close()


def test_dead_lettering_is_a_campaign_setting_counted_in_failed_attempts(mailgate_server):
    settings = mailgate_server.app.inbound.settings
    settings.dead_letter_after, settings.campaigns = 2, {"patient": 0}
    strict, patient = make_provider(mailgate_server), make_provider(mailgate_server, "Patient", campaign="patient")
    commit(mailgate_server, strict, [(1, mail(1))])
    commit(mailgate_server, patient, [(1, mail(1))])
    for campaign, gives_back in (("billing", 2), ("patient", 4)):
        c = Consumer(mailgate_server, campaign=campaign)
        try:
            for _ in range(gives_back):
                [r] = c.take(timeout=5)
                c.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=[r.ack_id],
                                                            modify_deadline_seconds=[0]))
            if campaign == "billing":  # two failed attempts: dead-lettered, not delivered again
                assert c.nothing(0.5)
                assert get(mailgate_server, r.message.name).state == Msg.STATE_DEAD_LETTER
            else:  # 0: never dead-lettered
                [r] = c.take(timeout=5)
                assert r.message.delivery_count == 5
        finally:
            c.close()


def test_acks_sent_on_another_stream_free_the_window_of_the_stream_that_got_the_mail(mailgate_server):
    mailgate_server.app.inbound.settings.sweep_interval = 60
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(1, mail(1)), (2, mail(2))])
    got_it = Consumer(mailgate_server, max_in_flight=1, name="got it")
    acker = Consumer(mailgate_server, campaign="elsewhere", name="acker")
    try:
        [first] = got_it.take()
        acker.ack(first)
        [second] = got_it.take(timeout=5)
        assert second.message.subject == "message 2"
        assert get(mailgate_server, first.message.name).state == Msg.STATE_ACKNOWLEDGED
    finally:
        got_it.close()
        acker.close()


def test_a_full_window_looks_at_the_store_at_each_sweep(mailgate_server):
    """Acknowledgements that came with no wake-up (a notification from another
    replica lost while its connection was down) free the window at the next sweep."""
    from mailgate.server.clock import utcnow
    from mailgate.server.inbound.messages import split_ack_id
    from mailgate.server.inbound.store import InboundStore

    app = mailgate_server.app
    app.inbound.settings.sweep_interval = 0.2
    p = make_provider(mailgate_server)
    commit(mailgate_server, p, [(n, mail(n)) for n in range(1, 5)])
    c = Consumer(mailgate_server, max_in_flight=2, deadline=60)
    try:
        first = c.take(2)
        pairs = [split_ack_id(r.ack_id) for r in first]
        assert app.db.run_sync(lambda s: InboundStore(s).ack(pairs, utcnow())) == 2  # behind the queue's back
        second = c.take(2, timeout=5)
        assert [r.message.subject for r in first + second] == [f"message {n}" for n in range(1, 5)]
    finally:
        c.close()


def test_the_campaigns_file_sets_dead_lettering_per_campaign_and_refuses_what_cannot_work(tmp_path):
    from mailgate.server.config import ConfigError, Settings, load_campaigns

    path = tmp_path / "campaigns.toml"
    path.write_text('[campaigns.sales]\ndead_letter_after = 20\n\n[campaigns."night shift"]\ndead_letter_after = 0\n')
    assert load_campaigns(Settings(campaigns_file=str(path))) == {"sales": 20, "night shift": 0}
    for text, says in (('[campaigns.sales]\ndead_letter_after = 1\n', "0 (never) or from 5 to 100"),
                       ('[campaigns.sales]\nretries = 3\n', "unknown settings retries")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_campaigns(Settings(campaigns_file=str(path)))
    with pytest.raises(ConfigError, match="MAILGATE_DEAD_LETTER_AFTER"):
        load_campaigns(Settings(dead_letter_after=2))


def test_a_trickle_of_mail_is_shared_among_the_consumers_that_have_room(mailgate_server):
    """Each message arrives alone and is acknowledged at once: whichever consumer
    subscribed first does not take them all."""
    p = make_provider(mailgate_server)
    consumers = [Consumer(mailgate_server, max_in_flight=100, name=f"c{i}") for i in range(2)]
    got = {c: 0 for c in consumers}
    try:
        time.sleep(0.3)  # both subscribed and waiting
        for n in range(1, 21):
            commit(mailgate_server, p, [(n, mail(n))])
            deadline = time.monotonic() + 5
            while not any(not c.received.empty() for c in consumers):
                assert time.monotonic() < deadline, f"message {n} reached nobody"
                time.sleep(0.01)
            for c in consumers:
                for r in c.take_all(wait=0.05):
                    got[c] += 1
                    c.ack(r)
        assert sum(got.values()) == 20
        assert min(got.values()) >= 5, got
    finally:
        for c in consumers:
            c.close()


def test_the_window_counts_bytes_too(mailgate_server):
    p = make_provider(mailgate_server)
    big = [mail(n) + b"x" * 20_000 + b"\n" for n in range(1, 6)]  # a long last body line
    commit(mailgate_server, p, list(enumerate(big, 1)))
    c = Consumer(mailgate_server, max_in_flight=100, max_in_flight_bytes=2 * len(big[0]) + 100)
    try:
        first = c.take(2)
        assert c.nothing(0.3)  # two messages fill the bytes of the window
        c.ack(first[0])
        [third] = c.take(timeout=5)
        assert third.message.subject == "message 3"
    finally:
        c.close()
    alone = Consumer(mailgate_server, max_in_flight=100, max_in_flight_bytes=1000)  # smaller than any message
    try:
        [one] = alone.take(timeout=5)  # a message bigger than the window still comes, by itself
        assert alone.nothing(0.3)
    finally:
        alone.close()
