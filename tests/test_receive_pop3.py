"""Receiving from a POP3 provider end to end: Dovecot's POP3 -> poller -> campaign
queue -> StreamInboundMail, with the UIDLs kept in the store across restarts."""
from __future__ import annotations

import poplib
import re
import time

from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread
from mailgate.v1 import provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

from support import PASSWORD, USER, customer_mail, wait_provider


def pop3_provider(server, dovecot, smtp, ca) -> provider_pb2.Provider:
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name="POP3 desk", type="smtp_imap", account=USER, receive_emails=True, campaign="support",
        smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=ca.ca_pem,
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
            inbound_protocol=provider_pb2.INBOUND_PROTOCOL_POP3,
            inbound=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.pop3s_port,
                                          security=provider_pb2.SECURITY_TLS)))))


def pop3_count(dovecot) -> int:
    conn = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
    try:
        conn.user(USER)
        conn.pass_(PASSWORD)
        return conn.stat()[0]
    finally:
        conn.quit()


def retrieved(dovecot, since: int = 0) -> tuple[int, int]:
    """(messages RETRieved over POP3 according to Dovecot's log from byte `since`, log size)."""
    text = dovecot.log_path.read_text()
    return sum(int(n) for n in re.findall(r"retr=(\d+)/", text[since:])), len(text)


def subjects(received) -> list[str]:
    return [r.message.subject for r in received]


def test_mail_in_a_pop3_mailbox_reaches_a_consumer_and_stays_on_the_server(
        mailgate_server, clean_dovecot, smtp_server, mail_ca):
    clean_dovecot.deliver(USER, customer_mail("waiting before the provider"))
    p = pop3_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        [first] = consumer.take(timeout=10)
        assert first.message.subject == "waiting before the provider" and first.message.provider == p.name
        clean_dovecot.deliver(USER, customer_mail("order 12 is late"))
        [second] = consumer.take(timeout=10)
        assert second.message.subject == "order 12 is late"
        assert second.message.message_id == "<order-12-is-late@example.test>"
        consumer.ack(first, second)
        assert consumer.nothing(wait=1.5)  # polled again (0.5 s): nothing fetched twice
    finally:
        consumer.close()
    assert pop3_count(clean_dovecot) == 2  # nothing deleted


def test_uidls_survive_a_restart_so_nothing_is_queued_twice_and_nothing_missed(
        mailgate_server, clean_dovecot, smtp_server, mail_ca):
    pop3_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    consumer = Consumer(mailgate_server, campaign="support")
    clean_dovecot.deliver(USER, customer_mail("before the restart"))
    [r] = consumer.take(timeout=10)
    consumer.ack_committed(r)
    consumer.close()
    mailgate_server.stop()
    clean_dovecot.deliver(USER, customer_mail("while mailgate was down"))
    _, mark = retrieved(clean_dovecot)

    again = ServerThread(mailgate_server.settings).start()
    consumer = Consumer(again, campaign="support")
    try:
        assert subjects(consumer.take(timeout=10)) == ["while mailgate was down"]
        assert consumer.nothing(wait=1.5)
        # The old message's UIDL was known: it was not even downloaded again.
        assert retrieved(clean_dovecot, mark)[0] == 1
    finally:
        consumer.close()
        again.stop()


def test_mail_deleted_by_a_mail_program_does_not_hide_the_next_message(
        mailgate_server, clean_dovecot, smtp_server, mail_ca):
    pop3_provider(mailgate_server, clean_dovecot, smtp_server("STARTTLS"), mail_ca)
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        clean_dovecot.deliver(USER, customer_mail("read and deleted"))
        [r] = consumer.take(timeout=10)
        consumer.ack(r)
        # A person's mail program downloads and deletes it (the newest message).
        conn = poplib.POP3(clean_dovecot.host, clean_dovecot.pop3_port, timeout=5)
        conn.user(USER)
        conn.pass_(PASSWORD)
        conn.dele(1)
        conn.quit()
        time.sleep(1.0)  # a poll sees the mailbox empty and forgets that UIDL
        clean_dovecot.deliver(USER, customer_mail("the next one"))
        assert subjects(consumer.take(timeout=10)) == ["the next one"]
    finally:
        consumer.close()


def test_a_pop3_server_that_goes_away_turns_the_provider_red_then_green(
        mailgate_server, dovecot_factory, smtp_server, mail_ca):
    dovecot = dovecot_factory()
    p = pop3_provider(mailgate_server, dovecot, smtp_server("STARTTLS"), mail_ca)
    dovecot.stop()
    red = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_RED)
    assert red.state_cause == provider_pb2.Provider.STATE_CAUSE_MAILBOX_UNREACHABLE
    assert red.state_reason.startswith("receiving stopped: cannot connect to the POP3 server ")
    dovecot.start()
    dovecot.deliver(USER, customer_mail("after the outage"))
    green = wait_provider(mailgate_server, p.name, provider_pb2.Provider.STATE_GREEN, timeout=20)
    assert green.state_cause == provider_pb2.Provider.STATE_CAUSE_RECOVERED
    consumer = Consumer(mailgate_server, campaign="support")
    try:
        assert subjects(consumer.take(timeout=10)) == ["after the outage"]
    finally:
        consumer.close()
