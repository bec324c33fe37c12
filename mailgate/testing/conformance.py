"""The driver conformance suite. A driver's tests subclass `DriverConformance`, set
`driver_type`, override the `valid_provider` fixture (and `bad_credentials_provider`
when the driver checks credentials; `receiving_provider` and `deliver_mail` when it
receives), and inherit every test of the contract, run through the gRPC API of a
real mailgate server:

    class TestMyDriver(DriverConformance):
        driver_type = "mine"

        @pytest.fixture
        def valid_provider(self):
            return provider_pb2.Provider(display_name="x", type="mine", account="a@b.test", ...)
"""
from __future__ import annotations

import uuid
from typing import Callable

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from mailgate.v1 import driver_pb2, inbound_service_pb2 as ipb, inbound_service_pb2_grpc, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb, validation_pb2

from .consumer import Consumer
from .harness import ServerThread
from .rpc import expect_error

Provider = provider_pb2.Provider
Check = validation_pb2.Check
Kind = driver_pb2.SettingField.Kind
PROVIDER_FIELDS = set(Provider.DESCRIPTOR.fields_by_name)


def _settings_field(provider: Provider) -> str:
    return provider.WhichOneof("settings") or "plugin_settings"


def _lookup(tree: dict, path: str):
    for part in path.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def _settings_tree(provider: Provider) -> dict:
    return MessageToDict(getattr(provider, _settings_field(provider)), preserving_proto_field_name=True)


def _given_secrets(provider: Provider, driver: driver_pb2.Driver) -> dict[str, str]:
    """Secret setting path -> value, for the secrets `provider` carries."""
    tree = _settings_tree(provider)
    return {f.path: _lookup(tree, f.path) for f in driver.settings
            if f.secret and isinstance(_lookup(tree, f.path), str) and _lookup(tree, f.path)}


class DriverConformance:
    driver_type: str = ""

    @pytest.fixture
    def valid_provider(self) -> Provider:
        """A provider that CreateProvider accepts (its servers running, if any)."""
        pytest.fail("override the valid_provider fixture")

    @pytest.fixture
    def bad_credentials_provider(self) -> Provider | None:
        """A provider whose credentials the driver's checks refuse; None if it has none."""
        return None

    @pytest.fixture
    def driver(self, mailgate_server) -> driver_pb2.Driver:
        drivers = mailgate_server.stub.ListDrivers(pb.ListDriversRequest()).drivers
        found = [d for d in drivers if d.type == self.driver_type]
        assert found, f"driver {self.driver_type!r} not in ListDrivers: {[d.type for d in drivers]}"
        return found[0]

    # -- the driver describes itself
    def test_listed_with_name_and_capabilities(self, driver):
        assert driver.display_name
        caps = driver.capabilities
        assert caps.send or caps.receive, "a driver that neither sends nor receives does nothing"

    def test_settings_schema_is_well_formed(self, driver):
        paths = [f.path for f in driver.settings]
        assert len(paths) == len(set(paths)), f"duplicate setting paths: {paths}"
        for f in driver.settings:
            assert f.label and f.kind != Kind.KIND_UNSPECIFIED, f.path
            if f.kind == Kind.KIND_ENUM:
                assert f.choices, f"{f.path}: an enum needs choices"
                if f.HasField("default_value"):
                    assert f.default_value.string_value in f.choices, f.path
            if f.kind == Kind.KIND_INTEGER and (f.minimum or f.maximum):
                assert f.minimum <= f.maximum, f.path
            for cond in f.required_when:
                assert cond.field in PROVIDER_FIELDS or cond.field in paths, \
                    f"{f.path}: required_when names unknown field {cond.field!r}"

    # -- lifecycle through the API
    def test_create_get_list_delete_round_trip(self, mailgate_server, valid_provider, driver):
        stub = mailgate_server.stub
        created = stub.CreateProvider(pb.CreateProviderRequest(provider=valid_provider))
        expected = Provider.STATE_GREY if driver.capabilities.oauth else Provider.STATE_GREEN
        assert created.state == expected, created.state_reason
        assert created.name.startswith("providers/") and created.type == self.driver_type
        assert created.display_name == valid_provider.display_name.strip()
        fetched = stub.GetProvider(pb.GetProviderRequest(name=created.name))
        created.ClearField("notices")
        assert fetched == created
        listed = stub.ListProviders(pb.ListProvidersRequest(filter=f'type = "{self.driver_type}"'))
        assert [p.name for p in listed.providers] == [created.name]
        stub.DeleteProvider(pb.DeleteProviderRequest(name=created.name))
        err = expect_error(lambda: stub.GetProvider(pb.GetProviderRequest(name=created.name)))
        assert err.code == grpc.StatusCode.NOT_FOUND

    def test_secrets_are_input_only(self, mailgate_server, valid_provider, driver):
        secrets = _given_secrets(valid_provider, driver)
        created = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=valid_provider))
        fetched = mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=created.name))
        for response in (created, fetched):
            wire = response.SerializeToString()
            tree = _settings_tree(response)
            for path, value in secrets.items():
                assert value.encode() not in wire, f"secret {path} came back in a response"
                assert _lookup(tree, path + "_set") is True, f"{path}_set should say it is set"

    def test_validate_only_stores_nothing(self, mailgate_server, valid_provider):
        stub = mailgate_server.stub
        preview = stub.CreateProvider(pb.CreateProviderRequest(provider=valid_provider, validate_only=True))
        assert preview.type == self.driver_type
        assert stub.ListProviders(pb.ListProvidersRequest()).providers == []

    def test_validate_candidate_reports_every_check(self, mailgate_server, valid_provider, driver):
        resp = mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=valid_provider))
        if not driver.capabilities.oauth:
            assert resp.report.ok and resp.report.checks, resp.report
        for check in resp.report.checks:
            assert check.id.startswith(check.side + "."), check.id
            assert check.outcome in (Check.OUTCOME_PASSED, Check.OUTCOME_SKIPPED), check
        assert mailgate_server.stub.ListProviders(pb.ListProvidersRequest()).providers == []

    def test_bad_credentials_stop_creation(self, mailgate_server, bad_credentials_provider):
        if bad_credentials_provider is None:
            pytest.skip("the driver has no credentials to refuse")
        stub = mailgate_server.stub
        err = expect_error(lambda: stub.CreateProvider(pb.CreateProviderRequest(provider=bad_credentials_provider)))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION, err.message
        assert err.info and err.info.reason.endswith("_AUTH_FAILED"), err.info
        assert err.report and any(c.outcome == Check.OUTCOME_FAILED for c in err.report.checks)
        assert stub.ListProviders(pb.ListProvidersRequest()).providers == []

    def test_missing_required_settings_are_named(self, mailgate_server, valid_provider, driver):
        empty = Provider()
        empty.CopyFrom(valid_provider)
        empty.ClearField(_settings_field(valid_provider))
        if _settings_field(valid_provider) == "plugin_settings":
            empty.plugin_settings.update({})
        else:
            getattr(empty, _settings_field(valid_provider)).SetInParent()
        request = pb.CreateProviderRequest(provider=empty, validate_only=True)
        if not any(f.required for f in driver.settings):  # defaults fill everything (OAuth drivers)
            assert mailgate_server.stub.CreateProvider(request).type == self.driver_type
            return
        err = expect_error(lambda: mailgate_server.stub.CreateProvider(request))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        field = _settings_field(valid_provider)
        for f in driver.settings:
            if f.required:
                assert f"provider.{field}.{f.path}" in err.violations, (f.path, err.violations)

    def test_activate_rechecks_and_turns_green(self, mailgate_server, valid_provider, driver):
        if driver.capabilities.oauth:
            pytest.skip("OAuth drivers activate through authorization")
        stub = mailgate_server.stub
        created = stub.CreateProvider(pb.CreateProviderRequest(provider=valid_provider))
        resp = stub.ActivateProvider(pb.ActivateProviderRequest(name=created.name))
        assert resp.provider.state == Provider.STATE_GREEN and resp.report.ok

    # -- receiving (drivers with capabilities.receive)
    @pytest.fixture
    def receiving_provider(self) -> Provider | None:
        """A provider with receive_emails on and a campaign, whose mailbox
        `deliver_mail` fills. Drivers that receive must override it."""
        return None

    @pytest.fixture
    def deliver_mail(self) -> Callable[[bytes], None]:
        """Puts one message (its exact bytes) where `receiving_provider` receives mail."""
        pytest.fail("override the deliver_mail fixture")

    @pytest.fixture
    def activate_provider(self) -> Callable[[ServerThread, str], None]:
        """Makes a created provider (its resource name) GREEN: ActivateProvider by
        default; an OAuth driver's tests sign in."""
        def activate(server: ServerThread, name: str) -> None:
            resp = server.stub.ActivateProvider(pb.ActivateProviderRequest(name=name))
            assert resp.provider.state == Provider.STATE_GREEN, resp.provider.state_reason
        return activate

    @pytest.fixture
    def receiving(self, driver, receiving_provider, mailgate_server, activate_provider) -> Provider:
        """The receiving provider, created and GREEN."""
        if not driver.capabilities.receive:
            pytest.skip("the driver does not receive")
        assert receiving_provider is not None, "a driver that receives must override receiving_provider"
        assert receiving_provider.receive_emails and receiving_provider.campaign
        created = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=receiving_provider))
        if created.state != Provider.STATE_GREEN:
            activate_provider(mailgate_server, created.name)
        return created

    def test_inbound_mail_is_queued_once_and_streamed_to_the_campaign(self, mailgate_server, receiving,
                                                                      deliver_mail):
        sent = [_customer_mail(receiving.account, f"first contact {n}") for n in range(3)]
        for raw, _ in sent:
            deliver_mail(raw)
        consumer = Consumer(mailgate_server, campaign=receiving.campaign)
        try:
            got = consumer.take(len(sent), timeout=_ARRIVAL)
            consumer.ack_committed(*got)
            assert sorted(r.message.message_id for r in got) == sorted(mid for _, mid in sent)
            assert {r.message.provider for r in got} == {receiving.name}
            assert consumer.nothing(1.0), "a message was delivered twice"
        finally:
            consumer.close()
        assert _queued(mailgate_server, receiving) == sorted(mid for _, mid in sent)

    def test_inbound_nothing_is_lost_across_a_restart_and_the_position_is_kept(
            self, mailgate_server, receiving, deliver_mail, mailgate_plugins):
        before, _ = first = _customer_mail(receiving.account, "before the restart")
        deliver_mail(before)
        consumer = Consumer(mailgate_server, campaign=receiving.campaign)
        try:
            consumer.ack_committed(*consumer.take(timeout=_ARRIVAL))
        finally:
            consumer.close()
        mailgate_server.stop()
        during = [_customer_mail(receiving.account, f"while stopped {n}") for n in range(2)]
        for raw, _ in during:
            deliver_mail(raw)
        with ServerThread(mailgate_server.settings, mailgate_plugins) as again:
            consumer = Consumer(again, campaign=receiving.campaign)
            try:
                got = consumer.take(len(during), timeout=_ARRIVAL)
                consumer.ack_committed(*got)
                assert sorted(r.message.message_id for r in got) == sorted(mid for _, mid in during)
                assert consumer.nothing(1.0), "mail committed before the restart came again"
            finally:
                consumer.close()
            assert _queued(again, receiving) == sorted(mid for _, mid in [first, *during])


_ARRIVAL = 20.0  # seconds for delivered mail to reach the stream, polling sources included


def _customer_mail(account: str, subject: str) -> tuple[bytes, str]:
    """A message to `account`, and its Message-ID."""
    mid = f"<{uuid.uuid4()}@customer.example.test>"
    raw = (f"From: Customer <customer@customer.example.test>\r\nTo: {account}\r\nSubject: {subject}\r\n"
           f"Message-ID: {mid}\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nHello about {subject}.\r\n")
    return raw.encode(), mid


def _queued(server: ServerThread, provider: Provider) -> list[str]:
    """The Message-IDs queued from `provider`, each as often as it was queued."""
    stub = inbound_service_pb2_grpc.InboundServiceStub(server.channel)
    listed = stub.ListInboundMessages(ipb.ListInboundMessagesRequest(filter=f'provider = "{provider.name}"',
                                                                    page_size=100))
    return sorted(m.message_id for m in listed.inbound_messages)
