"""The provider lifecycle through the gRPC API, against SQLite and PostgreSQL.

Uses the example `echo` driver (its "login" is a local key check) so these tests
are about the service's own rules; tests/test_smtp_imap.py covers real servers.
"""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

import mailgate_echo_driver
from mailgate.server import paging
from mailgate.testing.rpc import expect_error
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb

Provider = provider_pb2.Provider
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


@pytest.fixture
def server(mailgate_server):
    return mailgate_server


def echo(name="Support line", key="let-me-in", **fields) -> Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hello", "api_key": key, **fields.pop("settings", {})})
    fields.setdefault("account", "support@example.test")
    return Provider(display_name=name, type="echo", plugin_settings=settings, **fields)


def create(server, provider: Provider) -> Provider:
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider))


def test_create_stores_green_with_every_field(server):
    p = create(server, echo(from_name="Support team", receive_emails=False, active_reference=True,
                            reply_to=["a@example.test; b@example.test", "c@example.test"],
                            campaign="billing"))
    assert p.state == Provider.STATE_GREEN and p.state_reason
    assert p.from_name == "Support team" and p.active_reference and p.campaign == "billing"
    assert list(p.reply_to) == ["a@example.test", "b@example.test", "c@example.test"]
    assert p.create_time.seconds and p.update_time == p.create_time and p.state_time.seconds
    assert p.etag
    got = server.stub.GetProvider(pb.GetProviderRequest(name=p.name))
    assert got == p


def test_bad_fields_are_named_in_bad_request(server):
    bad = echo(name=" ", account="not-an-address", reply_to=["ok@example.test", "broken@"],
               from_name="Desk\r\nBcc: evil@example.test", settings={"retries": 9.5})
    bad.plugin_settings.fields.pop("greeting")
    err = expect_error(lambda: create(server, bad))
    assert err.code == INVALID and err.info.reason == "INVALID_ARGUMENT"
    assert set(err.violations) == {
        "provider.display_name", "provider.account", "provider.reply_to[1]", "provider.from_name",
        "provider.plugin_settings.greeting", "provider.plugin_settings.retries"}
    assert "line breaks" in err.violations["provider.from_name"]
    assert "whole number" in err.violations["provider.plugin_settings.retries"]
    assert server.stub.ListProviders(pb.ListProvidersRequest()).providers == []


def test_unknown_type_lists_installed_drivers(server):
    err = expect_error(lambda: create(server, Provider(display_name="x", type="fax",
                                                       account="a@example.test")))
    assert err.code == INVALID
    assert "unknown driver 'fax'" in err.violations["provider.type"]
    assert "echo" in err.violations["provider.type"]


def test_duplicate_name_is_already_exists_case_insensitively(server):
    create(server, echo(name="Billing"))
    err = expect_error(lambda: create(server, echo(name="  BILLING ")))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.info.metadata["display_name"] == "BILLING"


def test_wrong_credentials_store_nothing(server):
    err = expect_error(lambda: create(server, echo(key="nope")))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.info.reason == "ECHO_AUTH_FAILED"
    assert err.info.metadata["check"] == "echo.auth"
    assert [c.id for c in err.report.checks] == ["echo.auth"]
    assert server.stub.ListProviders(pb.ListProvidersRequest()).providers == []


def test_get_and_delete_missing_are_not_found(server):
    for call in (lambda: server.stub.GetProvider(pb.GetProviderRequest(name="providers/nope")),
                 lambda: server.stub.DeleteProvider(pb.DeleteProviderRequest(name="providers/nope"))):
        err = expect_error(call)
        assert err.code == grpc.StatusCode.NOT_FOUND and err.info.reason == "NOT_FOUND"
    err = expect_error(lambda: server.stub.GetProvider(pb.GetProviderRequest(name="shelves/1")))
    assert err.code == INVALID and "name" in err.violations


def test_update_with_mask_changes_only_named_fields(server):
    p = create(server, echo(from_name="Old", campaign="a"))
    patch = Provider(name=p.name, from_name="New", campaign="ignored")
    updated = server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=patch, update_mask=field_mask_pb2.FieldMask(paths=["from_name"])))
    assert updated.from_name == "New" and updated.campaign == "a"
    assert updated.etag != p.etag and updated.update_time.ToNanoseconds() >= p.update_time.ToNanoseconds()


def test_update_rechecks_credentials_and_refuses_bad_ones(server):
    p = create(server, echo())
    bad = struct_pb2.Struct()
    bad.update({"api_key": "wrong"})
    err = expect_error(lambda: server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, plugin_settings=bad),
        update_mask=field_mask_pb2.FieldMask(paths=["plugin_settings.api_key"]))))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.info.reason == "ECHO_AUTH_FAILED"
    unchanged = server.stub.GetProvider(pb.GetProviderRequest(name=p.name))
    assert unchanged.etag == p.etag
    good = struct_pb2.Struct()
    good.update({"greeting": "changed"})
    updated = server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, plugin_settings=good),
        update_mask=field_mask_pb2.FieldMask(paths=["plugin_settings.greeting"])))
    assert updated.plugin_settings["greeting"] == "changed"
    assert updated.plugin_settings["api_key_set"] is True  # the secret was kept


def test_update_refuses_output_only_and_type_and_unknown_paths(server):
    p = create(server, echo())
    for path, words in (("state", "output only"), ("nonsense", "not a field")):
        err = expect_error(lambda: server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=Provider(name=p.name), update_mask=field_mask_pb2.FieldMask(paths=[path]))))
        assert err.code == INVALID and words in err.violations["update_mask"]
    err = expect_error(lambda: server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, type="smtp_imap"),
        update_mask=field_mask_pb2.FieldMask(paths=["type"]))))
    assert err.code == INVALID and "type cannot change" in err.violations["update_mask"]


def test_update_without_mask_takes_populated_fields(server):
    p = create(server, echo(from_name="Old", campaign="keep"))
    updated = server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, from_name="New")))
    assert updated.from_name == "New" and updated.campaign == "keep"


def test_stale_etag_is_aborted(server):
    p = create(server, echo())
    server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, from_name="first", etag=p.etag)))
    err = expect_error(lambda: server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name, from_name="second", etag=p.etag))))
    assert err.code == grpc.StatusCode.ABORTED
    err = expect_error(lambda: server.stub.DeleteProvider(pb.DeleteProviderRequest(name=p.name, etag=p.etag)))
    assert err.code == grpc.StatusCode.ABORTED


def test_rename_to_a_taken_name_is_already_exists(server):
    create(server, echo(name="One"))
    two = create(server, echo(name="Two"))
    err = expect_error(lambda: server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=two.name, display_name="one"))))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS


def test_list_pages_and_filters(server):
    names = [create(server, echo(name=f"P{i}", campaign="odd" if i % 2 else "even")).name
             for i in range(7)]
    seen, token = [], ""
    while True:
        page = server.stub.ListProviders(pb.ListProvidersRequest(page_size=3, page_token=token))
        assert len(page.providers) <= 3
        seen += [p.name for p in page.providers]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    odd = server.stub.ListProviders(pb.ListProvidersRequest(
        filter='campaign = "odd" AND state = STATE_GREEN AND type = "echo"'))
    assert [p.name for p in odd.providers] == names[1::2]
    none = server.stub.ListProviders(pb.ListProvidersRequest(filter="state = STATE_RED"))
    assert none.providers == []


def test_a_page_holds_what_fits_its_byte_limit_and_its_token_goes_on_from_there(server, monkeypatch):
    names = [create(server, echo(name=f"B{i}")).name for i in range(5)]
    one = server.stub.ListProviders(pb.ListProvidersRequest(page_size=1)).providers[0].ByteSize()
    monkeypatch.setattr(paging, "MAX_PAGE_BYTES", 2 * (one + 8) + 4)  # two fit, a third does not
    seen, sizes, token = [], [], ""
    while True:
        page = server.stub.ListProviders(pb.ListProvidersRequest(page_size=50, page_token=token))
        seen += [p.name for p in page.providers]
        sizes.append(len(page.providers))
        token = page.next_page_token
        if not token:
            break
    assert sizes == [2, 2, 1] and seen == names


@pytest.mark.parametrize("request_fields, field", [
    ({"filter": "colour = 'red'"}, "filter"),
    ({"filter": "state = PURPLE"}, "filter"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"page_size": -1}, "page_size"),
])
def test_list_rejects_bad_requests(server, request_fields, field):
    err = expect_error(lambda: server.stub.ListProviders(pb.ListProvidersRequest(**request_fields)))
    assert err.code == INVALID and field in err.violations


def test_page_token_is_bound_to_its_filter(server):
    for i in range(3):
        create(server, echo(name=f"Q{i}"))
    page = server.stub.ListProviders(pb.ListProvidersRequest(page_size=1))
    err = expect_error(lambda: server.stub.ListProviders(pb.ListProvidersRequest(
        page_size=1, page_token=page.next_page_token, filter='campaign = "x"')))
    assert err.code == INVALID and "another filter" in err.violations["page_token"]


def test_validate_candidate_stores_nothing(server):
    resp = server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=echo(key="nope")))
    assert not resp.report.ok
    [check] = resp.report.checks
    assert check.id == "echo.auth" and check.error_code == check.ERROR_CODE_AUTH_FAILED
    assert server.stub.ListProviders(pb.ListProvidersRequest()).providers == []


def test_activate_returns_green_with_report(server):
    p = create(server, echo())
    resp = server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
    assert resp.provider.state == Provider.STATE_GREEN and resp.report.ok
    assert not resp.HasField("authorization")


def test_delete_removes_provider_and_frees_its_name(server):
    p = create(server, echo(name="Temp"))
    server.stub.DeleteProvider(pb.DeleteProviderRequest(name=p.name))
    again = create(server, echo(name="Temp"))
    assert again.name != p.name


def test_list_drivers_describes_schema(server):
    drivers = {d.type: d for d in server.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    assert {"smtp_imap", "echo"} <= set(drivers)
    smtp = drivers["smtp_imap"]
    assert smtp.capabilities.send and smtp.capabilities.receive and not smtp.capabilities.oauth
    fields = {f.path: f for f in smtp.settings}
    assert fields["password"].secret and fields["password"].required
    assert fields["smtp.port"].minimum == 1 and fields["smtp.port"].maximum == 65535
    [cond] = fields["inbound.host"].required_when
    assert cond.field == "receive_emails" and cond.equals.bool_value is True
    assert list(fields["smtp.security"].choices) == ["STARTTLS", "TLS", "NONE"]
    assert drivers["smtp_imap"].source.startswith("mailgate ")
    page = server.stub.ListDrivers(pb.ListDriversRequest(page_size=1))
    assert len(page.drivers) == 1 and page.next_page_token
