"""Sending through a provider, through the gRPC API, against aiosmtpd and Dovecot."""
from __future__ import annotations

import time

import grpc
from google.protobuf import field_mask_pb2
import pytest
from imapclient import IMAPClient

from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.testing.servers.smtpd import SmtpServer
from mailgate.v1 import mail_service_pb2 as mpb, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

from support import PASSWORD, USER, mail, make_provider, parse, wait_state

Out = mpb.OutboundMessage


@pytest.fixture
def smtp(mail_ca, mail_users):
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as server:
        yield server


def test_send_goes_out_with_from_name_reply_to_and_no_bcc_header(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca, reply_to=["desk@example.test;team@example.test"])
    sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["Jane Roe <jane@example.test>"], cc=["cc@example.test"],
        bcc=["hidden@example.test"], subject="Your ticket 42", text_body="Hello Jane"))
    assert sent.state == Out.STATE_SENT and sent.attempts == 1 and sent.sent_time.seconds
    [got] = smtp.wait_for_messages(1)
    assert got.mail_from == USER
    assert sorted(got.rcpt_tos) == ["cc@example.test", "hidden@example.test", "jane@example.test"]
    assert b"hidden@example.test" not in got.content
    m = parse(got.content)
    assert m["From"] == "Support team <agent@example.test>"
    assert m["Reply-To"] == "desk@example.test, team@example.test"
    assert m["Message-ID"] == sent.message_id and sent.message_id.endswith("@example.test>")
    assert m["Subject"] == "Your ticket 42" and m.get_content().strip() == "Hello Jane"
    assert got.login == USER


def test_request_id_makes_a_retry_return_the_first_message(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    req = mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="once", text_body="x",
                               request_id="5b0f7a4e-retry")
    first = mail(mailgate_server).SendEmail(req)
    again = mail(mailgate_server).SendEmail(req)
    assert again.name == first.name and again.message_id == first.message_id
    time.sleep(0.3)
    assert len(smtp.messages) == 1


def test_transient_failures_retry_then_send(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    smtp.fail_next = [(451, "4.3.0 try again later")] * 2
    first = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="retry", text_body="x"))
    assert first.state == Out.STATE_RETRYING
    assert first.last_error.smtp_code == 451 and "try again later" in first.last_error.message
    assert first.last_error.transient and first.next_attempt_time.seconds
    done = wait_state(mailgate_server, first.name, Out.STATE_SENT)
    assert done.state == Out.STATE_SENT and done.attempts == 3
    assert len(smtp.messages) == 1 and len(smtp.handler.rejected) == 2


def test_permanent_failure_is_failed_with_the_servers_words(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    smtp.fail_next = [(550, "5.7.1 message refused")]
    m = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="no", text_body="x"))
    assert m.state == Out.STATE_FAILED and m.last_error.smtp_code == 550
    assert "5.7.1 message refused" in m.last_error.message and not m.last_error.transient
    failed = mail(mailgate_server).ListOutboundMessages(mpb.ListOutboundMessagesRequest(
        filter=f'provider = "{p.name}" AND state = STATE_FAILED'))
    assert [x.name for x in failed.outbound_messages] == [m.name]


def test_replies_thread_with_active_reference(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca, active_reference=True)
    stub = mail(mailgate_server)
    a = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="Order 7",
                                            text_body="first"))
    b = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="Re: Order 7",
                                            text_body="second", reply_to_outbound_message=a.name))
    c = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="Order 7",
                                            text_body="third", reply_to_message_id=b.message_id.strip("<>")))
    _, mb, mc = (parse(x.content) for x in smtp.wait_for_messages(3))
    assert mb["In-Reply-To"] == a.message_id and mb["References"] == a.message_id
    assert mb["Subject"] == "Re: Order 7"  # once, not "Re: Re:"
    assert mc["In-Reply-To"] == b.message_id and mc["References"] == f"{a.message_id} {b.message_id}"
    assert mc["Subject"] == "Re: Order 7"
    assert a.conversation_id == b.conversation_id == c.conversation_id
    listed = stub.ListOutboundMessages(mpb.ListOutboundMessagesRequest(
        filter=f'conversation_id = "{a.conversation_id}"'))
    assert [m.name for m in listed.outbound_messages] == [c.name, b.name, a.name]


def test_without_active_reference_no_references_are_added(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca, active_reference=False)
    stub = mail(mailgate_server)
    a = stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="S", text_body="1"))
    stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="S", text_body="2",
                                        reply_to_outbound_message=a.name))
    _, second = (parse(x.content) for x in smtp.wait_for_messages(2))
    assert second["In-Reply-To"] is None and second["References"] is None and second["Subject"] == "S"


def test_bad_requests_are_named(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    stub = mail(mailgate_server)
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["not an address"], subject="Hi\r\nBcc: evil@example.test", text_body="x")))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"to[0]", "subject"} <= set(err.violations)
    assert "line breaks" in err.violations["subject"]
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(provider=p.name, subject="x", text_body="x")))
    assert "recipients" in err.violations
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["a@example.test"], text_body="x", reply_to_message_id="no id here")))
    assert "reply_to_message_id" in err.violations
    err = expect_error(lambda: stub.SendEmail(mpb.SendEmailRequest(provider="providers/nope", to=["a@example.test"])))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert smtp.messages == []


def test_a_red_provider_refuses_new_mail_and_keeps_queued_mail(mailgate_server, mail_ca, mail_users):
    users = dict(mail_users)
    with SmtpServer("STARTTLS", users, mail_ca) as smtp:
        p = make_provider(mailgate_server, smtp, mail_ca)
        users[USER] = "changed-on-the-server"
        queued = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
            provider=p.name, to=["jane@example.test"], subject="waits", text_body="x"))
        assert queued.state == Out.STATE_RETRYING  # the login was refused: the provider turned RED
        red = mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=p.name))
        assert red.state == provider_pb2.Provider.STATE_RED and "refused the login" in red.state_reason
        err = expect_error(lambda: mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
            provider=p.name, to=["jane@example.test"], subject="new", text_body="x")))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "RED" in err.violations["provider"]
        assert smtp.messages == []
        # The administrator enters the new password: GREEN, and the waiting mail goes out.
        fixed = mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=provider_pb2.Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(
                password="changed-on-the-server")),
            update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.password"])))
        assert fixed.state == provider_pb2.Provider.STATE_GREEN
        assert wait_state(mailgate_server, queued.name, Out.STATE_SENT, timeout=5).state == Out.STATE_SENT
        assert [parse(x.content)["Subject"] for x in smtp.messages] == ["waits"]


def test_mail_after_a_change_of_server_goes_to_the_new_one(mailgate_server, mail_ca, mail_users):
    """The pooled connection to the old server is idle and alive; it must not carry
    the provider's mail once its settings name another server."""
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as old, \
            SmtpServer("STARTTLS", dict(mail_users), mail_ca) as new:
        p = make_provider(mailgate_server, old, mail_ca)
        stub = mail(mailgate_server)
        assert stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="before",
                                                   text_body="x")).state == Out.STATE_SENT
        mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=provider_pb2.Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(
                password=PASSWORD,  # a new server gets the password only when it is given again
                smtp=provider_pb2.Endpoint(host=new.host, port=new.port, security=provider_pb2.SECURITY_STARTTLS))),
            update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.smtp", "smtp_imap.password"])))
        assert stub.SendEmail(mpb.SendEmailRequest(provider=p.name, to=["jane@example.test"], subject="after",
                                                   text_body="x")).state == Out.STATE_SENT
        assert [parse(m.content)["Subject"] for m in old.messages] == ["before"]
        assert [parse(m.content)["Subject"] for m in new.messages] == ["after"]


def test_queued_mail_survives_a_restart(tmp_path, mailgate_database_url, mail_ca, mail_users):
    settings = make_settings(tmp_path, mailgate_database_url)
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as smtp:
        with ServerThread(settings) as server:
            p = make_provider(server, smtp, mail_ca)
            smtp.stop()  # the SMTP server goes down
            m = mail(server).SendEmail(mpb.SendEmailRequest(
                provider=p.name, to=["jane@example.test"], subject="durable", text_body="x"))
            assert m.state == Out.STATE_RETRYING and m.last_error.transient
        smtp.start()  # back, on the same port, while mailgate is down
        with ServerThread(settings) as server:
            done = wait_state(server, m.name, Out.STATE_SENT)
            assert done.state == Out.STATE_SENT
        assert [parse(x.content)["Message-ID"] for x in smtp.messages] == [m.message_id]


def test_round_trip_into_a_real_mailbox(mailgate_server, mail_ca, mail_users, dovecot):
    def deliver(raw: bytes, rcpts: list[str]) -> None:  # aiosmtpd hands it on over LMTP
        assert rcpts == ["support@example.test"]
        dovecot.deliver("support", raw)

    with SmtpServer("STARTTLS", dict(mail_users), mail_ca, deliver_to=deliver) as smtp:
        p = make_provider(mailgate_server, smtp, mail_ca, from_name="Servicio Técnico")
        sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
            provider=p.name, to=["support@example.test"], subject="Factura nº 7 ✓",
            text_body="Adjunto la factura.", html_body="<p>Adjunto la <b>factura</b>.</p>",
            attachments=[mpb.Attachment(filename="factura 7.pdf", content_type="application/pdf",
                                        data=b"%PDF-1.4 \x00\xff binary")]))
        assert sent.state == Out.STATE_SENT
    client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5)
    client.login("support", mail_users["support"])
    client.select_folder("INBOX")
    uids = client.search(["HEADER", "Message-ID", sent.message_id])
    [raw] = [v[b"RFC822"] for v in client.fetch(uids, ["RFC822"]).values()]
    client.logout()
    m = parse(raw)
    assert m["Subject"] == "Factura nº 7 ✓" and m["From"] == "Servicio Técnico <agent@example.test>"
    assert m.get_body(("plain",)).get_content().strip() == "Adjunto la factura."
    assert "<b>factura</b>" in m.get_body(("html",)).get_content()
    [att] = list(m.iter_attachments())
    assert att.get_filename() == "factura 7.pdf" and att.get_content() == b"%PDF-1.4 \x00\xff binary"


def test_a_copy_goes_to_the_sent_folder_when_asked(mailgate_server, smtp, mail_ca, dovecot):
    p = make_provider(mailgate_server, smtp, mail_ca, name="Copies")
    mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=provider_pb2.Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(
            sent_folder="Sent Items", password=PASSWORD, inbound=provider_pb2.Endpoint(
                host=dovecot.host, port=dovecot.imaps_port, security=provider_pb2.SECURITY_TLS))),
        update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.sent_folder", "smtp_imap.inbound",
                                                    "smtp_imap.password"])))
    sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="keep a copy", text_body="x"))
    assert sent.state == Out.STATE_SENT
    [raw] = [r for r in dovecot.fetch_all(USER, "Sent Items").values()
             if parse(r)["Message-ID"] == sent.message_id]
    assert raw == smtp.messages[0].content  # the very bytes that went out


def test_sending_limits_hold_mail_back_instead_of_failing(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca, name="Limited")
    mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=provider_pb2.Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(
            sending_limits=provider_pb2.SendingLimits(per_minute=2))),
        update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.sending_limits.per_minute"])))
    states = [mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject=f"n{i}", text_body="x")) for i in range(3)]
    assert [m.state for m in states] == [Out.STATE_SENT, Out.STATE_SENT, Out.STATE_QUEUED]
    held = states[2]
    assert held.attempts == 0 and not held.HasField("last_error")
    assert held.next_attempt_time.ToSeconds() >= states[1].sent_time.ToSeconds() + 20
    assert len(smtp.messages) == 2


def test_python_client_sends_by_display_name_and_lists(mailgate_server, smtp, mail_ca):
    from mailgate.client import MailgateClient
    make_provider(mailgate_server, smtp, mail_ca, name="Client desk")
    with MailgateClient(mailgate_server.address, token=mailgate_server.token) as mg:
        sent = mg.send_email("client desk", to=["jane@example.test"], subject="hi", text_body="x",
                             request_id="client-1")
        assert sent.state == Out.STATE_SENT
        assert mg.get_outbound_message(sent.name) == sent
        assert [m.name for m in mg.list_outbound_messages(page_size=1)] == [sent.name]


def test_a_large_attachment_is_accepted_and_an_oversized_message_refused_in_words(mailgate_server, smtp, mail_ca):
    p = make_provider(mailgate_server, smtp, mail_ca)
    big = bytes(range(256)) * (8 * 4096)  # 8 MB: over gRPC's 4 MB default
    sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="big", text_body="see attached",
        attachments=[mpb.Attachment(filename="big.bin", content_type="application/octet-stream", data=big)]))
    assert sent.state == Out.STATE_SENT
    [att] = list(parse(smtp.wait_for_messages(1)[0].content).iter_attachments())
    assert att.get_content() == big
    err = expect_error(lambda: mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
        provider=p.name, to=["jane@example.test"], subject="huge", text_body="x",
        attachments=[mpb.Attachment(filename="huge.bin", data=big * 3)])))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "size" in err.violations


def test_a_send_that_outlives_its_lease_goes_out_once(tmp_path, mailgate_database_url, mail_ca, mail_users):
    """The SMTP server holds its reply to the data longer than the outbox lease
    (a large message on a slow link does): the attempt keeps its message, the worker
    does not take it for a second attempt, and the message is received once."""
    from mailgate.server.outbound.store import OutboxStore, OutState
    from mailgate.server.store.db import Database

    # The worker looks for due mail at least every 5 s: a hold of 7 s outlives a
    # 1 s lease and the worker's next look.
    settings = make_settings(tmp_path, mailgate_database_url, outbox_lease=1.0, first_attempt_wait=0.2)
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as smtp:
        with ServerThread(settings) as server:
            p = make_provider(server, smtp, mail_ca)
            smtp.handler.data_reply_delay = 7.0
            m = mail(server).SendEmail(mpb.SendEmailRequest(
                provider=p.name, to=["jane@example.test"], subject="slow and large", text_body="x"))
            assert m.state == Out.STATE_QUEUED  # the attempt is still waiting for the reply
            assert wait_state(server, m.name, Out.STATE_SENT, timeout=20).state == Out.STATE_SENT
        # Stopping waits for every attempt under way: a second one would have landed by now.
        assert [parse(x.content)["Message-ID"] for x in smtp.messages] == [m.message_id]
    db = Database(mailgate_database_url)
    try:
        stored = db.transaction(lambda s: OutboxStore(s).get(m.name.removeprefix("outboundMessages/")))
    finally:
        db.close()
    assert (stored.state, stored.attempts) == (OutState.SENT, 1)
