"""What several of mailgate's own test modules share: the test account, providers
made over the API, and waiting for a state through it."""
from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage

from mailgate.testing.servers.smtpd import SmtpServer
from mailgate.v1 import mail_service_pb2 as mpb, mail_service_pb2_grpc, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

USER, PASSWORD = "agent@example.test", "s3cret-agent"


def make_provider(server, smtp: SmtpServer, ca, name="Desk", **fields) -> provider_pb2.Provider:
    fields.setdefault("from_name", "Support team")
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name=name, type="smtp_imap", account=USER,
        smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=ca.ca_pem,
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS)),
        **fields)))


def receiving_provider(server, dovecot, smtp, ca, campaign="support") -> provider_pb2.Provider:
    """"Receiving": sends through `smtp`, watches the test account's INBOX on `dovecot`."""
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
        display_name="Receiving", type="smtp_imap", account=USER, receive_emails=True, campaign=campaign,
        smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=ca.ca_pem,
            smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=provider_pb2.SECURITY_STARTTLS),
            inbound=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imaps_port,
                                          security=provider_pb2.SECURITY_TLS)))))


def mail(server) -> mail_service_pb2_grpc.MailServiceStub:
    return mail_service_pb2_grpc.MailServiceStub(server.channel)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def wait_state(server, name: str, state: int, timeout: float = 10) -> mpb.OutboundMessage:
    deadline = time.monotonic() + timeout
    while True:
        m = mail(server).GetOutboundMessage(mpb.GetOutboundMessageRequest(name=name))
        if m.state == state or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def customer_mail(subject: str) -> bytes:
    m = EmailMessage()
    m["From"] = "Customer <customer@example.test>"
    m["To"] = USER
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '-')}@example.test>"
    m.set_content("Hello, I need help.")
    return bytes(m)


def wait_provider(server, name: str, state: int, timeout: float = 15) -> provider_pb2.Provider:
    deadline = time.monotonic() + timeout
    while True:
        p = server.stub.GetProvider(pb.GetProviderRequest(name=name))
        if p.state == state or time.monotonic() > deadline:
            return p
        time.sleep(0.1)
