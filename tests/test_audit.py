"""The audit trail: a JSON record for each change, send, stream and denied call,
naming who, what and how it ended; never a secret, never message content."""
from __future__ import annotations

import json
import logging

import grpc
import mailgate_echo_driver
import pytest
from google.protobuf import struct_pb2

from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.v1 import (mail_service_pb2, mail_service_pb2_grpc, provider_pb2, provider_service_pb2,
                         provider_service_pb2_grpc, token_service_pb2, token_service_pb2_grpc)

KEY = "let-me-in"


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def records(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "mailgate.audit"]


def echo(name: str) -> provider_pb2.Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hi", "api_key": KEY})
    return provider_pb2.Provider(display_name=name, type="echo", account="a@example.test", campaign="sales",
                                 plugin_settings=settings)


def test_changes_sends_streams_and_denials_each_leave_one_record(mailgate_server, caplog):
    caplog.set_level(logging.INFO, logger="mailgate.audit")
    providers = provider_service_pb2_grpc.ProviderServiceStub(mailgate_server.channel)
    tokens = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    p = providers.CreateProvider(provider_service_pb2.CreateProviderRequest(provider=echo("Audited")))
    providers.GetProvider(provider_service_pb2.GetProviderRequest(name=p.name))  # a read: not audited
    refused = echo("Refused")
    refused.plugin_settings["api_key"] = "wrong-key"
    expect_error(lambda: providers.CreateProvider(provider_service_pb2.CreateProviderRequest(provider=refused)))
    sent = mail_service_pb2_grpc.MailServiceStub(mailgate_server.channel).SendEmail(mail_service_pb2.SendEmailRequest(
        provider=p.name, to=["customer@example.test"], subject="private subject", text_body="private body"))
    made = tokens.CreateToken(token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
        display_name="reader", permissions=["providers.read", "inbound.consume"])))
    with mailgate_server.open_channel(made.secret) as channel:
        expect_error(lambda: provider_service_pb2_grpc.ProviderServiceStub(channel).DeleteProvider(
            provider_service_pb2.DeleteProviderRequest(name=p.name)))

        class Reader:
            pass
        reader = Reader()
        reader.channel = channel
        consumer = Consumer(reader, campaign="sales")
        assert consumer.nothing(0.3)
        consumer.close()
    with mailgate_server.open_channel() as channel:
        expect_error(lambda: provider_service_pb2_grpc.ProviderServiceStub(channel).ListProviders(
            provider_service_pb2.ListProvidersRequest()))
    tokens.DeleteToken(token_service_pb2.DeleteTokenRequest(name=made.token.name))

    admin = f"tokens/{mailgate_server.token.split('_')[1]}"
    got = [(r["method"], r["principal"], r["resource"], r["outcome"], r.get("event", "")) for r in records(caplog)]
    assert got == [
        ("CreateProvider", admin, p.name, "OK", ""),
        ("CreateProvider", admin, "", "ECHO_AUTH_FAILED", ""),
        ("SendEmail", admin, sent.name, "OK", ""),
        ("CreateToken", admin, made.token.name, "OK", ""),
        ("DeleteProvider", made.token.name, p.name, "PERMISSION_DENIED", ""),
        ("StreamInboundMail", made.token.name, "campaigns/sales", "OK", "opened"),
        ("StreamInboundMail", made.token.name, "campaigns/sales", "CANCELLED", "closed"),
        ("ListProviders", "", "", "UNAUTHENTICATED", ""),
        ("DeleteToken", admin, made.token.name, "OK", ""),
    ], got
    for r in records(caplog):
        assert r["time"] and r["peer"].startswith(("ipv4:127.0.0.1", "ipv6:[::1]"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (KEY, "wrong-key", made.secret, mailgate_server.token, "private subject", "private body"):
        assert secret not in text


def test_the_audit_file_takes_the_records_alone(tmp_path, caplog):
    path = tmp_path / "audit.jsonl"
    with ServerThread(make_settings(tmp_path, audit_file=str(path)), [mailgate_echo_driver]) as server:
        providers = provider_service_pb2_grpc.ProviderServiceStub(server.channel)
        p = providers.CreateProvider(provider_service_pb2.CreateProviderRequest(provider=echo("Filed")))
        with server.open_channel() as channel:
            err = expect_error(lambda: provider_service_pb2_grpc.ProviderServiceStub(channel).GetProvider(
                provider_service_pb2.GetProviderRequest(name=p.name)))
            assert err.code == grpc.StatusCode.UNAUTHENTICATED
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["method"], r["outcome"]) for r in lines] == [("CreateProvider", "OK"), ("GetProvider", "UNAUTHENTICATED")]
    assert path.stat().st_mode & 0o777 == 0o600
    assert not records(caplog)


def test_records_are_written_whatever_the_log_level(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)  # as MAILGATE_LOG_LEVEL=WARNING
    monkeypatch.setattr(logging.getLogger("mailgate.audit"), "level", logging.NOTSET)
    with ServerThread(make_settings(tmp_path), [mailgate_echo_driver]) as server:
        provider_service_pb2_grpc.ProviderServiceStub(server.channel).CreateProvider(
            provider_service_pb2.CreateProviderRequest(provider=echo("Quiet")))
    assert [r["method"] for r in records(caplog)] == ["CreateProvider"]


def test_a_record_repeats_only_names_of_what_the_caller_sent(mailgate_server, caplog):
    caplog.set_level(logging.INFO, logger="mailgate.audit")
    with mailgate_server.open_channel() as channel:  # denied: recorded before any field is checked
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        for name in ("providers/ok-1", "password=hunter2-and-more", "providers/x\x1b[2J"):
            expect_error(lambda: stub.GetProvider(provider_service_pb2.GetProviderRequest(name=name)))
    assert [r["resource"] for r in records(caplog)] == ["providers/ok-1", "(not a resource name)",
                                                        "(not a resource name)"]
