"""Only who may: API tokens, a permission per RPC, UNAUTHENTICATED and
PERMISSION_DENIED as the contract says, the administrator token file, and the
checks on where the server listens."""
from __future__ import annotations

import os
import stat
import time
from datetime import datetime, timedelta, timezone

import grpc
import mailgate_echo_driver
import pytest
from google.protobuf import field_mask_pb2, message_factory, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import event, select

from mailgate.server.access.permissions import ALL, PERMISSIONS, RPC_PERMISSIONS
from mailgate.server.config import ConfigError, Settings, check_listen
from mailgate.server.store.models import ApiTokenRow
from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error, rich_error
from mailgate.v1 import (inbound_service_pb2, inbound_service_pb2_grpc, mail_service_pb2, mail_service_pb2_grpc,
                         provider_pb2, provider_service_pb2, provider_service_pb2_grpc, token_service_pb2,
                         token_service_pb2_grpc)
from support import customer_mail

SERVICES = [f.services_by_name[name] for f, name in (
    (provider_service_pb2.DESCRIPTOR, "ProviderService"), (mail_service_pb2.DESCRIPTOR, "MailService"),
    (inbound_service_pb2.DESCRIPTOR, "InboundService"), (token_service_pb2.DESCRIPTOR, "TokenService"))]
METHODS = [m for s in SERVICES for m in s.methods]
DENIALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def call(channel: grpc.Channel, method, timeout: float = 10) -> grpc.RpcError | None:
    """Calls `method` with an empty request; the error, or None if it succeeded."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs = dict(request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)
    try:
        if method.client_streaming:
            for _ in channel.stream_stream(path, **kwargs)(iter([request_class()]), timeout=timeout):
                break
        else:
            channel.unary_unary(path, **kwargs)(request_class(), timeout=timeout)
    except grpc.RpcError as err:
        return err
    return None


def create_token(server: ServerThread, permissions: list[str], **fields) -> str:
    stub = token_service_pb2_grpc.TokenServiceStub(server.channel)
    return stub.CreateToken(token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
        display_name="test", permissions=permissions, **fields))).secret


def test_every_rpc_has_a_permission_and_no_table_entry_is_stale():
    names = {f"/{m.containing_service.full_name}/{m.name}" for m in METHODS}
    assert names == set(RPC_PERMISSIONS)
    assert set(RPC_PERMISSIONS.values()) | {ALL} == set(PERMISSIONS)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_rpc_is_allowed_with_its_permission_and_denied_without(mailgate_server, method):
    needed = RPC_PERMISSIONS[f"/{method.containing_service.full_name}/{method.name}"]
    others = [p for p in PERMISSIONS if p not in (needed, ALL)]
    with mailgate_server.open_channel(create_token(mailgate_server, others)) as channel:
        err = rich_error(call(channel, method))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.info.reason == "PERMISSION_DENIED" and err.info.metadata["permission"] == needed
    with mailgate_server.open_channel(create_token(mailgate_server, [needed])) as channel:
        err = call(channel, method)  # an empty request may well be refused, but not for want of rights
        assert err is None or err.code() not in DENIALS, err


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_rpc_without_credentials_is_unauthenticated(mailgate_server, method):
    with mailgate_server.open_channel() as channel:
        err = rich_error(call(channel, method))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in err.message


def test_bad_credentials_are_unauthenticated_and_say_which_kind(mailgate_server):
    good = create_token(mailgate_server, [ALL])
    token_id = good.split("_")[1]
    cases = {
        "not-a-token": "malformed",
        f"mgt_{token_id}_{'A' * 43}": "not valid",  # the right id, the wrong secret
        f"mgt_{'0' * 32}_{good[-43:]}": "not valid",  # no such id
    }
    get = provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"].methods_by_name["ListProviders"]
    for token, says in cases.items():
        with mailgate_server.open_channel(token) as channel:
            err = rich_error(call(channel, get))
        assert err.code == grpc.StatusCode.UNAUTHENTICATED and says in err.message, token
        assert token not in err.message
    raw = grpc.insecure_channel(mailgate_server.address)
    with raw:
        stub = raw.unary_unary("/mailgate.v1.ProviderService/ListProviders",
                               request_serializer=provider_service_pb2.ListProvidersRequest.SerializeToString,
                               response_deserializer=provider_service_pb2.ListProvidersResponse.FromString)
        err = expect_error(lambda: stub(provider_service_pb2.ListProvidersRequest(),
                                        metadata=[("authorization", f"Basic {good}")]))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.message


def test_a_denied_call_reads_nothing_from_the_database(mailgate_server):
    token = create_token(mailgate_server, ["mail.read"])
    statements: list[str] = []
    engines = [e for e in (mailgate_server.app.db.engine, mailgate_server.app.db._loop_engine) if e is not None]
    with mailgate_server.open_channel(token) as channel:
        stub = channel.unary_unary("/mailgate.v1.ProviderService/GetProvider",
                                   request_serializer=provider_service_pb2.GetProviderRequest.SerializeToString,
                                   response_deserializer=lambda b: b)
        expect_error(lambda: stub(provider_service_pb2.GetProviderRequest(name="providers/x")))  # token now known

        def seen(conn, cursor, statement, *args):
            statements.append(statement)
        for engine in engines:
            event.listen(engine, "before_cursor_execute", seen)
        try:
            for _ in range(3):
                err = expect_error(lambda: stub(provider_service_pb2.GetProviderRequest(name="providers/x")))
                assert err.code == grpc.StatusCode.PERMISSION_DENIED
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", seen)
    assert statements == []  # neither the resource nor the (cached) token


def test_health_is_open_and_reflection_needs_a_credential(mailgate_server):
    with mailgate_server.open_channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with mailgate_server.open_channel(create_token(mailgate_server, ["inbound.consume"])) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for s in answer.list_services_response.service}
        assert {"mailgate.v1.TokenService", "grpc.reflection.v1.ServerReflection"} <= services
        # v1 has v1alpha's messages under another name: a v1-only tool is answered too
        v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        [answer] = v1(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="mailgate.v1.TokenService")]))
        assert answer.file_descriptor_response.file_descriptor_proto


def test_a_token_is_shown_once_stored_as_a_hash_listed_and_revoked_at_once(mailgate_server):
    stub = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    created = stub.CreateToken(token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
        display_name="dialer sales", permissions=["inbound.consume", "inbound.consume"], campaigns=["sales"])))
    assert created.secret.startswith("mgt_") and created.token.permissions == ["inbound.consume"]
    listed = {t.name: t for t in stub.ListTokens(token_service_pb2.ListTokensRequest()).tokens}
    assert listed[created.token.name].display_name == "dialer sales"
    assert listed[created.token.name].campaigns == ["sales"]
    assert created.secret not in str(listed)
    rows = mailgate_server.app.db.transaction(lambda s: list(s.scalars(select(ApiTokenRow))))
    assert all(created.secret not in repr(vars(r)) for r in rows)
    assert any(len(r.secret_hash) == 64 for r in rows)

    ack = inbound_service_pb2.DESCRIPTOR.services_by_name["InboundService"].methods_by_name["AckInboundMail"]
    with mailgate_server.open_channel(created.secret) as channel:
        assert call(channel, ack) is None
        used = {t.name: t for t in stub.ListTokens(token_service_pb2.ListTokensRequest()).tokens}
        assert used[created.token.name].HasField("last_use_time")
        stub.DeleteToken(token_service_pb2.DeleteTokenRequest(name=created.token.name))
        assert call(channel, ack).code() == grpc.StatusCode.UNAUTHENTICATED  # no cache outlives a revocation
    err = expect_error(lambda: stub.DeleteToken(token_service_pb2.DeleteTokenRequest(name=created.token.name)))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_an_expired_token_is_refused(mailgate_server):
    stub = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    token = token_service_pb2.Token(display_name="short", permissions=["providers.read"])
    token.expire_time.FromDatetime(datetime.now(timezone.utc) + timedelta(seconds=1))
    secret = stub.CreateToken(token_service_pb2.CreateTokenRequest(token=token)).secret
    method = provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"].methods_by_name["ListDrivers"]
    with mailgate_server.open_channel(secret) as channel:
        assert call(channel, method) is None
        deadline = token.expire_time.ToDatetime(tzinfo=timezone.utc)
        while datetime.now(timezone.utc) <= deadline:
            pass
        err = rich_error(call(channel, method))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "expired" in err.message


def test_a_bad_token_request_names_each_bad_field(mailgate_server):
    stub = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    token = token_service_pb2.Token(display_name=" ", permissions=["mail.send", "mail.everything"],
                                    providers=["prov/1"], campaigns=[""])
    token.expire_time.FromDatetime(datetime(2020, 1, 1))
    err = expect_error(lambda: stub.CreateToken(token_service_pb2.CreateTokenRequest(token=token)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"token.display_name", "token.permissions[1]", "token.providers[0]",
                                   "token.campaigns[0]", "token.expire_time"}
    assert "mail.read" in err.violations["token.permissions[1]"]  # the known ones are listed


def test_the_administrator_token_file_is_private_kept_across_restarts_and_used_by_the_cli(
        tmp_path, capsys, monkeypatch):
    from mailgate.cli import main

    settings = make_settings(tmp_path)
    with ServerThread(settings) as server:
        path = settings.admin_token_file
        assert path == tmp_path / "mailgate.token"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        first = server.token
        monkeypatch.chdir(tmp_path)  # the CLI finds ./mailgate.token
        assert main(["--server", server.address, "tokens", "create", "dialer", "-p", "inbound.consume",
                     "--campaign", "sales", "--expires-in", "30"]) == 0
        out = capsys.readouterr().out
        secret = out.splitlines()[1]
        assert secret.startswith("mgt_")
        assert main(["--server", server.address, "tokens", "list"]) == 0
        listing = capsys.readouterr().out
        assert "dialer" in listing and "campaign=sales" in listing and secret not in listing
        name = next(w for w in out.split() if w.startswith("tokens/")).rstrip(";")
        assert main(["--server", server.address, "tokens", "revoke", name]) == 0
        monkeypatch.setenv("MAILGATE_TOKEN", secret)
        assert main(["--server", server.address, "providers", "list"]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
    with ServerThread(settings) as server:
        assert server.token == first


def test_with_authentication_off_anyone_may_call(tmp_path):
    with ServerThread(make_settings(tmp_path, auth=False)) as server:
        assert not server.settings.admin_token_file.exists()
        method = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].methods_by_name["ListTokens"]
        with server.open_channel() as channel:
            assert call(channel, method) is None


@pytest.mark.parametrize("listen, says", [
    ("127.0.0.1:65536", "port from 1 to 65535"),
    ("127.0.0.1:-1", "port from 1 to 65535"),
    ("127.0.0.1", "host:port"),
    ("127.0.0.1:http", "host:port"),
    ("mail-host:50051", "not an IP address"),
    ("::1:50051", "in brackets"),
    ("10.1.2.3:50051", "--trusted-network"),
    ("[::]:50051", "--trusted-network"),
])
def test_a_bad_or_open_listen_address_is_refused_with_what_to_do(listen, says):
    with pytest.raises(ConfigError, match=says.replace("-", r"\-")):
        check_listen(Settings(listen=listen))


def test_loopback_listens_and_a_trusted_network_must_keep_authentication():
    for listen in ("127.0.0.1:50051", "[::1]:0", "localhost:1"):
        check_listen(Settings(listen=listen))
    check_listen(Settings(listen="10.1.2.3:50051", trusted_network=True))
    with pytest.raises(ConfigError, match="MAILGATE_AUTH"):
        check_listen(Settings(listen="10.1.2.3:50051", trusted_network=True, auth=False))


def test_serve_refuses_an_open_address_before_creating_anything(tmp_path, monkeypatch, capsys):
    import logging

    from mailgate.cli import main

    root = logging.getLogger()  # `serve` sets up logging for the process: undone after the test
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--listen", "192.0.2.1:50051"]) == 2
    assert "--trusted-network" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ scope
@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


@pytest.fixture
def world(mailgate_server, tmp_path):
    """Two receiving echo providers, `sales` and `billing`, each with one message
    queued and one sent; the admin's stubs."""
    admin = Stubs(mailgate_server.channel)
    made = {}
    for campaign in ("sales", "billing"):
        spool = tmp_path / campaign
        spool.mkdir()
        settings = struct_pb2.Struct()
        settings.update({"greeting": "hi", "api_key": "let-me-in", "spool_dir": str(spool)})
        p = admin.providers.CreateProvider(provider_service_pb2.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name=campaign, type="echo", account=f"{campaign}@example.test", receive_emails=True,
            campaign=campaign, plugin_settings=settings)))
        (spool / "m.tmp").write_bytes(customer_mail(f"to {campaign}"))
        (spool / "m.tmp").rename(spool / "m.eml")
        sent = admin.mail.SendEmail(mail_service_pb2.SendEmailRequest(
            provider=p.name, to=["customer@example.test"], subject=f"from {campaign}", text_body="hello"))
        made[campaign] = (p, sent)
    deadline = time.monotonic() + 10
    while len(admin.inbound.ListInboundMessages(inbound_service_pb2.ListInboundMessagesRequest()).inbound_messages) < 2:
        assert time.monotonic() < deadline, "the spooled mail was not queued"
        time.sleep(0.05)
    return made


class Stubs:
    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.providers = provider_service_pb2_grpc.ProviderServiceStub(channel)
        self.mail = mail_service_pb2_grpc.MailServiceStub(channel)
        self.inbound = inbound_service_pb2_grpc.InboundServiceStub(channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(channel)


def scoped(server: ServerThread, permissions: list[str], **scope) -> Stubs:
    return Stubs(server.open_channel(create_token(server, permissions, **scope)))


def assert_denied(call, permission: str) -> None:
    err = expect_error(call)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.info.metadata["permission"] == permission


def test_a_campaign_scoped_consumer_streams_reads_and_lists_only_its_campaign(mailgate_server, world):
    sales = scoped(mailgate_server, ["inbound.consume", "inbound.read"], campaigns=["sales"])
    consumer = Consumer(sales, campaign="sales")
    try:
        [got] = consumer.take(timeout=10)
        assert got.message.subject == "to sales"
        consumer.ack(got)
    finally:
        consumer.close()
    stranger = Consumer(sales, campaign="billing")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            stranger.take(timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stranger.close()
    listed = sales.inbound.ListInboundMessages(inbound_service_pb2.ListInboundMessagesRequest()).inbound_messages
    assert [m.campaign for m in listed] == ["sales"]
    billing = Stubs(mailgate_server.channel).inbound.ListInboundMessages(
        inbound_service_pb2.ListInboundMessagesRequest(filter='campaign = "billing"')).inbound_messages[0]
    for name in (billing.name, "inboundMessages/00000000-0000-0000-0000-000000000000"):  # hidden == missing
        assert_denied(lambda: sales.inbound.GetInboundMessage(inbound_service_pb2.GetInboundMessageRequest(
            name=name)), "inbound.read")


def test_raw_bytes_on_a_stream_need_inbound_read(mailgate_server, world):
    consume_only = scoped(mailgate_server, ["inbound.consume"], campaigns=["sales"])
    consumer = Consumer(consume_only, campaign="sales", include_raw=True)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            consumer.take(timeout=10)
        assert rich_error(refused.value).info.metadata["permission"] == "inbound.read"
    finally:
        consumer.close()


def test_a_provider_scoped_sender_sends_reads_and_lists_only_through_its_provider(mailgate_server, world):
    (sales, sales_sent), (billing, billing_sent) = world["sales"], world["billing"]
    sender = scoped(mailgate_server, ["mail.send", "mail.read", "providers.read", "inbound.consume"],
                    providers=[sales.name])
    sent = sender.mail.SendEmail(mail_service_pb2.SendEmailRequest(
        provider=sales.name, to=["customer@example.test"], subject="again", text_body="hello"))
    assert sent.provider == sales.name
    assert_denied(lambda: sender.mail.SendEmail(mail_service_pb2.SendEmailRequest(
        provider=billing.name, to=["customer@example.test"], subject="no", text_body="no")), "mail.send")
    listed = sender.mail.ListOutboundMessages(mail_service_pb2.ListOutboundMessagesRequest()).outbound_messages
    assert {m.provider for m in listed} == {sales.name} and len(listed) == 2
    assert sender.mail.GetOutboundMessage(mail_service_pb2.GetOutboundMessageRequest(
        name=sales_sent.name)).name == sales_sent.name
    assert_denied(lambda: sender.mail.GetOutboundMessage(mail_service_pb2.GetOutboundMessageRequest(
        name=billing_sent.name)), "mail.read")
    providers = sender.providers.ListProviders(provider_service_pb2.ListProvidersRequest()).providers
    assert [p.name for p in providers] == [sales.name]
    for name in (billing.name, "providers/nope"):
        assert_denied(lambda: sender.providers.GetProvider(provider_service_pb2.GetProviderRequest(name=name)),
                      "providers.read")
    campaign_wide = Consumer(sender, campaign="sales")  # would show other providers' mail of the campaign
    try:
        with pytest.raises(grpc.RpcError) as refused:
            campaign_wide.take(timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        campaign_wide.close()


def test_a_campaign_scoped_reader_reads_the_mail_its_campaigns_providers_sent(mailgate_server, world):
    (_, sales_sent), (_, billing_sent) = world["sales"], world["billing"]
    reader = scoped(mailgate_server, ["mail.read"], campaigns=["sales"])
    assert reader.mail.GetOutboundMessage(mail_service_pb2.GetOutboundMessageRequest(
        name=sales_sent.name)).name == sales_sent.name
    for name in (billing_sent.name, "outboundMessages/00000000-0000-0000-0000-000000000000"):
        assert_denied(lambda: reader.mail.GetOutboundMessage(mail_service_pb2.GetOutboundMessageRequest(
            name=name)), "mail.read")
    listed = reader.mail.ListOutboundMessages(mail_service_pb2.ListOutboundMessagesRequest()).outbound_messages
    assert [m.name for m in listed] == [sales_sent.name]


def test_a_campaign_scoped_administrator_keeps_providers_and_tokens_within_its_campaign(mailgate_server, world):
    sales, billing = world["sales"][0], world["billing"][0]
    admin = scoped(mailgate_server, ["providers.write", "providers.read", "tokens.admin"], campaigns=["sales"])
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hi", "api_key": "let-me-in"})

    def create(campaign: str):
        return admin.providers.CreateProvider(provider_service_pb2.CreateProviderRequest(
            provider=provider_pb2.Provider(display_name=f"new {campaign}", type="echo", campaign=campaign,
                                           account="new@example.test", plugin_settings=settings)))
    assert create("sales").campaign == "sales"
    assert_denied(lambda: create("billing"), "providers.write")
    moved = provider_pb2.Provider(name=sales.name, campaign="billing")
    assert_denied(lambda: admin.providers.UpdateProvider(provider_service_pb2.UpdateProviderRequest(
        provider=moved, update_mask=field_mask_pb2.FieldMask(paths=["campaign"]))), "providers.write")
    assert_denied(lambda: admin.providers.DeleteProvider(provider_service_pb2.DeleteProviderRequest(
        name=billing.name)), "providers.write")
    listed = admin.providers.ListProviders(provider_service_pb2.ListProvidersRequest()).providers
    assert sorted(p.display_name for p in listed) == ["new sales", "sales"]

    def grant(permissions: list[str], **scope):
        return admin.tokens.CreateToken(token_service_pb2.CreateTokenRequest(token=token_service_pb2.Token(
            display_name="delegated", permissions=permissions, **scope)))
    assert grant(["providers.read"], campaigns=["sales"]).secret
    assert_denied(lambda: grant(["mail.send"], campaigns=["sales"]), "mail.send")  # not its own to give
    assert_denied(lambda: grant(["providers.read"]), "tokens.admin")  # wider than its scope
    assert_denied(lambda: grant(["providers.read"], campaigns=["billing"]), "tokens.admin")
