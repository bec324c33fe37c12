"""Receiving end to end: Dovecot -> watcher -> campaign queue -> StreamInboundMail."""
from __future__ import annotations

from email.message import EmailMessage

from imapclient import IMAPClient

from mailgate.testing.consumer import Consumer
from mailgate.v1 import provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

USER, PASSWORD = "agent@example.test", "s3cret-agent"


def receiving_provider(server, dovecot, smtp, ca, campaign="support") -> provider_pb2.Provider:
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name="Receiving", type="smtp_imap", account=USER, receive_emails=True, campaign=campaign,
        smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=ca.ca_pem,
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
            inbound=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imaps_port,
                                          security=provider_pb2.SECURITY_TLS)))))


def customer_mail(subject: str) -> bytes:
    m = EmailMessage()
    m["From"] = "Customer <customer@example.test>"
    m["To"] = USER
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '-')}@example.test>"
    m.set_content("Hello, I need help.")
    return bytes(m)


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
