"""Slow or silent mail servers keep only their own checks waiting: a caller's checks
of other servers, and other callers' checks, do not queue behind their timeouts."""
from __future__ import annotations

import grpc
import pytest

from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc
from mailgate.v1 import token_service_pb2, token_service_pb2_grpc

from support import PASSWORD, USER

SLOW = 40  # far more than the server's blocking-call pool (8 threads in tests)


def candidate(host: str, port: int, ca_pem: str = "", timeout: int = 2) -> pb.ValidateProviderRequest:
    return pb.ValidateProviderRequest(provider=provider_pb2.Provider(
        display_name="Candidate", type="smtp_imap", account=USER, smtp_imap=provider_pb2.SmtpImapSettings(
            password=PASSWORD, ca_certificates_pem=ca_pem, timeout_seconds=timeout,
            smtp=provider_pb2.Endpoint(host=host, port=port, security=provider_pb2.SECURITY_STARTTLS))))


def test_silent_servers_do_not_hold_up_other_checks(mailgate_server, silent_listener, smtp_server, mail_ca):
    smtp = smtp_server("STARTTLS")
    admin = mailgate_server.stub
    slow = [admin.ValidateProvider.future(candidate(silent_listener.host, silent_listener.port), timeout=120)
            for _ in range(SLOW)]
    other = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel).CreateToken(
        token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
            display_name="another admin screen", permissions=["providers.write"]))).secret
    try:
        with mailgate_server.open_channel(other) as channel:  # another caller
            report = provider_service_pb2_grpc.ProviderServiceStub(channel).ValidateProvider(
                candidate(smtp.host, smtp.port, mail_ca.ca_pem), timeout=60).report
            assert report.ok
        assert not any(f.done() for f in slow)  # answered while every silent check still waits
        report = admin.ValidateProvider(candidate(smtp.host, smtp.port, mail_ca.ca_pem), timeout=60).report
        assert report.ok  # the same caller, another server
        assert not any(f.done() for f in slow)
    finally:
        for f in slow:
            f.cancel()


def test_a_provider_cannot_ask_for_an_endless_timeout(mailgate_server, smtp_server, mail_ca):
    smtp = smtp_server("STARTTLS")
    with pytest.raises(grpc.RpcError) as refused:
        mailgate_server.stub.ValidateProvider(candidate(smtp.host, smtp.port, mail_ca.ca_pem, timeout=3600))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "60" in refused.value.details()
