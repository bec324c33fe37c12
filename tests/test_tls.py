"""Server TLS and mutual TLS: callers known by their client certificate, refused
without one or with one from another CA; a renewed certificate serves new
connections without a restart while an open stream goes on."""
from __future__ import annotations

import os

import grpc
import mailgate_echo_driver
import pytest
from google.protobuf import struct_pb2

from mailgate.server.config import ConfigError, Settings, check_listen
from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.testing.servers.certs import TestCA
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc
from support import customer_mail

CLIENTS = '''
[clients."dialer-sales"]
permissions = ["providers.read"]

[clients."spiffe://contact-center/router"]
permissions = ["providers.read", "providers.write"]
campaigns = ["sales"]
'''


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    return TestCA.create(root / "a"), TestCA.other(root / "b")


def client(ca: TestCA, trusted: TestCA, name: str = "", uri: str = "") -> grpc.ChannelCredentials:
    """Channel credentials trusting `trusted`, presenting a certificate `ca` signed for `name`."""
    if not name:
        return grpc.ssl_channel_credentials(trusted.ca_pem.encode())
    cert, key = ca.client_certificate(name, uri=uri)
    return grpc.ssl_channel_credentials(trusted.ca_pem.encode(), key.read_bytes(), cert.read_bytes())


@pytest.fixture
def mtls_server(tmp_path, cas, mailgate_database_url):
    a, _ = cas
    (tmp_path / "clients.toml").write_text(CLIENTS)
    settings = make_settings(tmp_path, mailgate_database_url, tls_cert=str(a.cert_path), tls_key=str(a.key_path),
                             tls_client_ca=str(a.ca_path), clients_file=str(tmp_path / "clients.toml"))
    with ServerThread(settings, credentials=client(a, a, "mailgate-admin")) as server:
        yield server


def list_providers(channel: grpc.Channel):
    return provider_service_pb2_grpc.ProviderServiceStub(channel).ListProviders(pb.ListProvidersRequest(), timeout=10)


def delete(channel: grpc.Channel):
    return provider_service_pb2_grpc.ProviderServiceStub(channel).DeleteProvider(
        pb.DeleteProviderRequest(name="providers/x"), timeout=10)


def test_a_client_certificate_named_in_the_clients_file_is_a_principal(mtls_server, cas):
    a, _ = cas
    with mtls_server.open_channel(credentials=client(a, a, "dialer-sales")) as channel:
        assert list(list_providers(channel).providers) == []
        err = expect_error(lambda: delete(channel))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.info.metadata["permission"] == "providers.write"
    with mtls_server.open_channel(credentials=client(a, a, "router-7", uri="spiffe://contact-center/router")) as ch:
        err = expect_error(lambda: delete(ch))  # known by its URI name, scoped to a campaign: missing is denied
        assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.info.metadata["permission"] == "providers.write"
    with mtls_server.open_channel(mtls_server.token) as channel:  # a token still works over mutual TLS
        assert list(list_providers(channel).providers) == []


def test_a_certificate_the_file_does_not_name_needs_a_token(mtls_server, cas):
    a, _ = cas
    with mtls_server.open_channel(credentials=client(a, a, "stranger")) as channel:
        err = expect_error(lambda: list_providers(channel))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "client certificate" in err.message


@pytest.mark.parametrize("which", ["another CA", "no certificate"])
def test_without_a_certificate_from_the_client_ca_no_connection_is_made(mtls_server, cas, which):
    a, b = cas
    credentials = client(b, a, "dialer-sales") if which == "another CA" else client(a, a)
    with mtls_server.open_channel(mtls_server.token, credentials=credentials) as channel:
        err = expect_error(lambda: list_providers(channel))
    assert err.code == grpc.StatusCode.UNAVAILABLE


def test_a_renewed_certificate_serves_new_connections_while_an_open_stream_goes_on(
        tmp_path, cas, mailgate_database_url):
    a, b = cas
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(a.cert_path.read_bytes())
    key.write_bytes(a.key_path.read_bytes())
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = make_settings(tmp_path, mailgate_database_url, tls_cert=str(cert), tls_key=str(key))
    with ServerThread(settings, [mailgate_echo_driver], credentials=client(a, a)) as server:
        settings_struct = struct_pb2.Struct()
        settings_struct.update({"greeting": "hi", "api_key": "let-me-in", "spool_dir": str(spool)})
        provider_service_pb2_grpc.ProviderServiceStub(server.channel).CreateProvider(pb.CreateProviderRequest(
            provider=provider_pb2.Provider(display_name="Spool", type="echo", account="s@example.test",
                                           receive_emails=True, campaign="renewal", plugin_settings=settings_struct)))
        consumer = Consumer(server, campaign="renewal")
        try:
            assert consumer.nothing(0.3)  # the stream is open on a connection made with the old certificate
            for path, new in ((cert, b.cert_path), (key, b.key_path)):  # renewed as a deploy tool would: rename
                path.with_suffix(".new").write_bytes(new.read_bytes())
                os.replace(path.with_suffix(".new"), path)
            with server.open_channel(server.token, credentials=client(b, b)) as renewed:
                assert list(list_providers(renewed).providers)  # no restart needed
            with server.open_channel(server.token, credentials=client(a, a)) as old:
                assert expect_error(lambda: list_providers(old)).code == grpc.StatusCode.UNAVAILABLE
            (spool / "m.tmp").write_bytes(customer_mail("after the renewal"))
            (spool / "m.tmp").rename(spool / "m.eml")
            [got] = consumer.take(timeout=10)
            assert got.message.subject == "after the renewal"
        finally:
            consumer.close()


def test_tls_settings_must_be_whole_and_let_the_server_listen_beyond_loopback():
    check_listen(Settings(listen="10.1.2.3:50051", tls_cert="c.pem", tls_key="k.pem"))
    with pytest.raises(ConfigError, match="go together"):
        check_listen(Settings(listen="127.0.0.1:50051", tls_cert="c.pem"))
    with pytest.raises(ConfigError, match="needs TLS"):
        check_listen(Settings(listen="127.0.0.1:50051", tls_client_ca="ca.pem"))


def test_a_bad_clients_file_stops_the_server_at_start(tmp_path):
    (tmp_path / "clients.toml").write_text('[clients.x]\npermissions = ["mail.everything"]\n')
    with pytest.raises(ConfigError, match="unknown: mail.everything"):
        ServerThread(make_settings(tmp_path, clients_file=str(tmp_path / "clients.toml"))).start()


def test_the_cli_speaks_tls_and_mutual_tls_from_the_environment(mtls_server, cas, monkeypatch, capsys):
    from mailgate.cli import main

    a, _ = cas
    cert, key = a.client_certificate("dialer-sales")
    monkeypatch.delenv("MAILGATE_TOKEN", raising=False)
    monkeypatch.setenv("MAILGATE_TOKEN_FILE", str(mtls_server.settings.key_file.with_name("no-token-here")))
    monkeypatch.setenv("MAILGATE_TLS_CA", str(a.ca_path))
    monkeypatch.setenv("MAILGATE_TLS_CLIENT_CERT", str(cert))
    monkeypatch.setenv("MAILGATE_TLS_CLIENT_KEY", str(key))
    assert main(["--server", mtls_server.address, "providers", "list"]) == 0  # the certificate's principal
    assert "no providers yet" in capsys.readouterr().out
    monkeypatch.delenv("MAILGATE_TLS_CLIENT_CERT")
    monkeypatch.delenv("MAILGATE_TLS_CLIENT_KEY")
    assert main(["--server", mtls_server.address, "providers", "list"]) == 3  # no certificate: no connection
    assert "UNAVAILABLE" in capsys.readouterr().err
