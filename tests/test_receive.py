"""Receiving end to end: Dovecot -> watcher -> campaign queue -> StreamInboundMail."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc

from imapclient import IMAPClient

from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import connect_process, serve_env
from mailgate.testing.rpc import expect_error
from mailgate.testing.servers.silent import free_ports
from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc, provider_pb2, provider_service_pb2_grpc
from mailgate.v1.provider_event_pb2 import ProviderEvent as PE
from mailgate.v1 import provider_service_pb2 as pb

from support import PASSWORD, USER, customer_mail, receiving_provider, wait_provider

RED, GREEN = provider_pb2.Provider.STATE_RED, provider_pb2.Provider.STATE_GREEN


def test_mail_delivered_to_the_mailbox_reaches_a_stream_consumer(mailgate_server, clean_dovecot,
                                                                 smtp_server, mail_ca):
    p = receiving_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        clean_dovecot.deliver(USER, customer_mail("order 77 is late"))
        [r] = consumer.take(timeout=10)
        m = r.message
        assert m.subject == "order 77 is late" and m.provider == p.name and m.campaign == "support"
        assert m.message_id == "<order-77-is-late@example.test>"
        assert m.text_body.strip() == "Hello, I need help."
        consumer.ack(r)
        # The mailbox is not modified: a person reading it still sees the mail as new.
        client = IMAPClient(clean_dovecot.host, clean_dovecot.imap_port, ssl=False, timeout=5)
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        [flags] = client.get_flags(client.search("ALL")).values()
        client.logout()
        assert b"\\Seen" not in flags
    finally:
        consumer.close()


def test_dovecot_restart_turns_the_provider_red_then_green_nothing_is_lost_and_its_events_tell(
        mailgate_server, dovecot_factory, smtp_server, mail_ca):
    dovecot = dovecot_factory()
    p = receiving_provider(mailgate_server, dovecot, smtp_server("STARTTLS"), mail_ca)
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        dovecot.deliver(USER, customer_mail("before the restart"))
        [first] = consumer.take(timeout=10)
        consumer.ack(first)
        dovecot.stop()
        red = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_RED)
        assert red.state_cause == provider_pb2.Provider.STATE_CAUSE_MAILBOX_UNREACHABLE
        assert red.state_reason.startswith("receiving stopped: ") and "connect" in red.state_reason
        dovecot.start()
        green = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_GREEN)
        assert green.state_cause == provider_pb2.Provider.STATE_CAUSE_RECOVERED
        dovecot.deliver(USER, customer_mail("after the restart"))
        [second] = consumer.take(timeout=10)
        assert second.message.subject == "after the restart"
        assert consumer.nothing(0.5)  # the first message is not delivered again
    finally:
        consumer.close()
    # The history says when it went down, why, that it kept trying, and when it came back.
    found = list(mailgate_server.stub.ListProviderEvents(pb.ListProviderEventsRequest(parent=p.name)).provider_events)
    changes = [(e.previous_state, e.state, e.state_cause) for e in found if e.type == PE.TYPE_STATE_CHANGED]
    assert changes == [(RED, GREEN, provider_pb2.Provider.STATE_CAUSE_RECOVERED),
                       (GREEN, RED, provider_pb2.Provider.STATE_CAUSE_MAILBOX_UNREACHABLE),
                       (provider_pb2.Provider.STATE_UNSPECIFIED, GREEN, provider_pb2.Provider.STATE_CAUSE_CHECKS_PASSED)]
    down = next(e for e in found if e.state == RED)
    assert down.reason == red.state_reason and down.event_time == red.state_time
    reconnects = [e for e in found if e.type == PE.TYPE_RECONNECT]
    assert reconnects and all(e.check_id.startswith("imap.") and e.reason.endswith("; trying again")
                              for e in reconnects)
    assert found.index(reconnects[-1]) > found.index(down)  # the session dropped before it turned RED


def test_sigkill_and_restart_loses_nothing_and_redelivers_only_the_unacknowledged(
        tmp_path, dovecot_factory, smtp_server, mail_ca):
    dovecot = dovecot_factory()
    smtp = smtp_server("STARTTLS")

    def serve() -> tuple[subprocess.Popen, ServerHandle]:
        [port] = free_ports(1)
        env = serve_env(MAILGATE_KEY_FILE=str(tmp_path / "mailgate.key"))
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--database-url", f"sqlite:///{tmp_path / 'mailgate.db'}"], env=env)
        return proc, ServerHandle(connect_process(f"127.0.0.1:{port}", tmp_path / "mailgate.token"))

    first, server = serve()
    try:
        p = receiving_provider(server, dovecot, smtp, mail_ca, campaign="kill")
        c1 = Consumer(server, campaign="kill", deadline=10)
        for i in range(6):
            dovecot.deliver(USER, customer_mail(f"before {i}"))
        got = c1.take(6, timeout=15)
        acked = got[:3]
        c1.ack(*acked)
        stub = inbound_service_pb2_grpc.InboundServiceStub(server.channel)
        def unacknowledged() -> list[str]:
            return [r.message.subject for r in acked if stub.GetInboundMessage(ipb.GetInboundMessageRequest(
                name=r.message.name)).state != ipb.InboundMessage.STATE_ACKNOWLEDGED]
        deadline = time.monotonic() + 15
        while unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert unacknowledged() == []  # the acks are committed before the kill
        first.send_signal(signal.SIGKILL)  # no shutdown, no release: leases just stop being renewed
        first.wait(10)
        c1.close()
        server.channel.close()
        for i in range(3):
            dovecot.deliver(USER, customer_mail(f"while down {i}"))
        second, server = serve()
        try:
            # A long deadline: c2 holds the first messages while c1's leases run out.
            c2 = Consumer(server, campaign="kill", deadline=60)
            again = c2.take(6, timeout=30)  # 3 new at once, 3 unacknowledged when their lease expires
            subjects = sorted(r.message.subject for r in again)
            assert subjects == sorted([r.message.subject for r in got[3:]] + [f"while down {i}" for i in range(3)])
            c2.ack(*again)
            extra = c2.take_all(1.0)
            assert extra == [], [(r.message.subject, r.message.delivery_count) for r in extra]
            c2.close()
            assert server.stub.GetProvider(pb.GetProviderRequest(name=p.name)).state == \
                provider_pb2.Provider.STATE_GREEN
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()


class ServerHandle:
    """What Consumer and the helpers need of a server: a channel and a stub."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.stub = provider_service_pb2_grpc.ProviderServiceStub(self.channel)


def test_two_providers_feed_one_campaign_and_a_server_without_idle_is_polled(
        mailgate_server, dovecot_factory, smtp_server, mail_ca):
    with_idle, without_idle = dovecot_factory(), dovecot_factory(imap_idle=False)
    smtp = smtp_server("STARTTLS")
    a = receiving_provider(mailgate_server, with_idle, smtp, mail_ca, campaign="shared")
    b_request = pb.CreateProviderRequest(provider=provider_pb2.Provider())
    b_request.provider.CopyFrom(a)
    b_request.provider.display_name = "Receiving without IDLE"
    b_request.provider.smtp_imap.password = PASSWORD
    b_request.provider.smtp_imap.inbound.port = without_idle.imaps_port
    b = mailgate_server.stub.CreateProvider(b_request)
    consumer = Consumer(mailgate_server, campaign="shared")
    try:
        with_idle.deliver(USER, customer_mail("via idle"))
        without_idle.deliver(USER, customer_mail("via polling"))
        got = {r.message.subject: r.message.provider for r in consumer.take(2, timeout=10)}
        assert got == {"via idle": a.name, "via polling": b.name}
    finally:
        consumer.close()


def test_every_configured_folder_is_watched_and_mail_in_two_of_them_is_queued_once(
        mailgate_server, clean_dovecot, smtp_server, mail_ca):
    clean_dovecot.append(USER, customer_mail("filed by a rule"), folder="Support")
    request = pb.CreateProviderRequest(provider=provider_pb2.Provider())
    request.provider.CopyFrom(receiving_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"),
                                                 mail_ca, campaign="folders"))
    p = request.provider
    consumer = Consumer(mailgate_server, campaign="folders")
    try:
        assert consumer.nothing(wait=1.0)  # INBOX only: Support is not watched
        p.smtp_imap.folders[:] = ["INBOX", "Support"]
        p.smtp_imap.password = PASSWORD
        updated = mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=p, update_mask={"paths": ["smtp_imap.folders", "smtp_imap.password"]}))
        assert list(updated.smtp_imap.folders) == ["INBOX", "Support"]
        [r] = consumer.take(timeout=10)
        assert r.message.subject == "filed by a rule"
        clean_dovecot.deliver(USER, customer_mail("copied to both folders"))
        assert [m.message.subject for m in consumer.take(timeout=10)] == ["copied to both folders"]
        [stored] = clean_dovecot.fetch_all(USER).values()
        clean_dovecot.append(USER, stored, folder="Support")  # a mail rule copies it
        assert consumer.nothing(wait=1.5)
    finally:
        consumer.close()


def test_a_folder_that_does_not_exist_turns_the_provider_red_with_its_name(
        mailgate_server, clean_dovecot, smtp_server, mail_ca):
    p = receiving_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    p.smtp_imap.folders[:] = ["INBOX", "Escalations"]
    p.smtp_imap.password = PASSWORD
    mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=p, update_mask={"paths": ["smtp_imap.folders", "smtp_imap.password"]}))
    red = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_RED)
    assert red.state_cause == provider_pb2.Provider.STATE_CAUSE_MAILBOX_UNREACHABLE
    assert red.state_reason.startswith("receiving stopped: IMAP folder 'Escalations' cannot be opened")
    clean_dovecot.append(USER, customer_mail("first escalation"), folder="Escalations")  # creates it
    green = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_GREEN, timeout=20)
    assert green.state == provider_pb2.Provider.STATE_GREEN


def test_folder_names_are_checked(mailgate_server, clean_dovecot, smtp_server, mail_ca):
    p = receiving_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    p.smtp_imap.folders[:] = ["INBOX", "INBOX"]
    err = expect_error(lambda: mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=p, update_mask={"paths": ["smtp_imap.folders"]})))
    assert err.violations == {"provider.smtp_imap.folders": "lists an entry twice"}
