"""The smtp_imap driver through the gRPC API, against real servers: Dovecot (IMAP,
POP3) and aiosmtpd (AUTH, STARTTLS, implicit TLS), on loopback."""
from __future__ import annotations

import logging
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2

from mailgate.drivers.smtp_imap.driver import SmtpImapDriver
from mailgate.drivers.api import ProviderConfig
from mailgate.testing.conformance import DriverConformance
from mailgate.testing.rpc import expect_error
from mailgate.testing.servers.smtpd import SmtpServer
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, validation_pb2

Provider = provider_pb2.Provider
Check = validation_pb2.Check
USER, PASSWORD = "agent@example.test", "s3cret-agent"
SEC = {"NONE": provider_pb2.SECURITY_NONE, "STARTTLS": provider_pb2.SECURITY_STARTTLS,
       "TLS": provider_pb2.SECURITY_TLS}
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


class CountingUsers(dict):
    """A users table that counts login attempts (aiosmtpd looks the login up once each)."""
    attempts = 0

    def __contains__(self, key):
        self.attempts += 1
        return super().__contains__(key)


def settings(smtp: SmtpServer, ca, *, password=PASSWORD, inbound=None, protocol="IMAP",
             **extra) -> provider_pb2.SmtpImapSettings:
    s = provider_pb2.SmtpImapSettings(
        password=password, ca_certificates_pem=ca.ca_pem,
        smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port, security=SEC[smtp.mode]),
        inbound_protocol=provider_pb2.INBOUND_PROTOCOL_POP3 if protocol == "POP3"
        else provider_pb2.INBOUND_PROTOCOL_IMAP, **extra)
    if inbound:
        host, port, security = inbound
        s.inbound.CopyFrom(provider_pb2.Endpoint(host=host, port=port, security=SEC[security]))
    # the plain test servers are on loopback: NONE is allowed unless a test says otherwise
    s.allow_plaintext_login = extra.get("allow_plaintext_login",
                                        provider_pb2.SECURITY_NONE in (s.smtp.security, s.inbound.security))
    return s


def imap_tls(dovecot):
    return (dovecot.host, dovecot.imaps_port, "TLS")


def provider(name, smtp_imap, *, receive=True, account=USER, **fields) -> Provider:
    return Provider(display_name=name, type="smtp_imap", account=account, receive_emails=receive,
                    smtp_imap=smtp_imap, **fields)


def create(server, p: Provider) -> Provider:
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=p))


def ids_and_outcomes(report):
    return [(c.id, Check.Outcome.Name(c.outcome).removeprefix("OUTCOME_")) for c in report.checks]


# ------------------------------------------------------------------ conformance
class TestSmtpImapConformance(DriverConformance):
    driver_type = "smtp_imap"

    @pytest.fixture
    def valid_provider(self, smtp_server, dovecot, mail_ca):
        return provider("Conformance", settings(smtp_server("STARTTLS"), mail_ca,
                                                inbound=imap_tls(dovecot)))

    @pytest.fixture
    def bad_credentials_provider(self, smtp_server, dovecot, mail_ca):
        return provider("Refused", settings(smtp_server("STARTTLS"), mail_ca, password="wrong",
                                            inbound=imap_tls(dovecot)))

    @pytest.fixture(params=["IMAP", "POP3"])  # each of the driver's inbound sources
    def receiving_provider(self, request, smtp_server, clean_dovecot, mail_ca):
        port = clean_dovecot.imaps_port if request.param == "IMAP" else clean_dovecot.pop3s_port
        return provider(f"Receiving {request.param}", settings(
            smtp_server("STARTTLS"), mail_ca, inbound=(clean_dovecot.host, port, "TLS"), protocol=request.param),
            campaign="conformance")

    @pytest.fixture
    def deliver_mail(self, clean_dovecot):
        return lambda raw: clean_dovecot.deliver(USER, raw)


# ------------------------------------------------------------------ security modes
@pytest.mark.parametrize("smtp_mode", ["NONE", "STARTTLS", "TLS"])
@pytest.mark.parametrize("protocol, port_attr, security", [
    ("IMAP", "imap_port", "NONE"), ("IMAP", "imap_port", "STARTTLS"), ("IMAP", "imaps_port", "TLS"),
    ("POP3", "pop3_port", "STARTTLS"), ("POP3", "pop3s_port", "TLS")])
def test_every_security_mode_checks_out(mailgate_server, smtp_server, dovecot, mail_ca,
                                        smtp_mode, protocol, port_attr, security):
    inbound = (dovecot.host, getattr(dovecot, port_attr), security)
    s = settings(smtp_server(smtp_mode), mail_ca, inbound=inbound, protocol=protocol)
    resp = mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=provider("x", s)))
    side = protocol.lower()
    tls = lambda mode: "SKIPPED" if mode == "NONE" else "PASSED"  # noqa: E731
    assert ids_and_outcomes(resp.report) == [
        ("smtp.connect", "PASSED"), ("smtp.tls", tls(smtp_mode)), ("smtp.auth", "PASSED"),
        (f"{side}.connect", "PASSED"), (f"{side}.tls", tls(security)), (f"{side}.auth", "PASSED")]
    assert resp.report.ok
    assert all(c.host == "127.0.0.1" for c in resp.report.checks)
    assert all(c.duration.ToNanoseconds() > 0 for c in resp.report.checks if c.outcome == Check.OUTCOME_PASSED)


def test_create_logs_in_and_stores_green(mailgate_server, smtp_server, dovecot, mail_ca):
    p = create(mailgate_server, provider("Support", settings(smtp_server("STARTTLS"), mail_ca,
                                                             inbound=imap_tls(dovecot)),
                                         campaign="support", from_name="Support team"))
    assert p.state == Provider.STATE_GREEN
    assert p.smtp_imap.password_set and not p.smtp_imap.password
    assert p.smtp_imap.smtp.port == smtp_server("STARTTLS").port
    assert p.smtp_imap.inbound.security == provider_pb2.SECURITY_TLS


# ------------------------------------------------------------------ refusals
def test_wrong_password_stops_creation_naming_smtp_and_imap(mailgate_server, smtp_server, dovecot, mail_ca):
    smtp = smtp_server("STARTTLS")
    err = expect_error(lambda: create(mailgate_server, provider(
        "Wrong", settings(smtp, mail_ca, password="wrong", inbound=imap_tls(dovecot)))))
    assert err.code == FAILED_PRECONDITION
    assert err.info.reason == "SMTP_AUTH_FAILED"
    assert err.info.metadata["failed_checks"] == "smtp.auth,imap.auth"
    assert "SMTP authentication failed" in err.message and "535" in err.message
    assert "IMAP authentication failed" in err.message
    assert "wrong" not in err.message
    assert mailgate_server.stub.ListProviders(pb.ListProvidersRequest()).providers == []


def test_imap_only_failure_is_named_imap(mailgate_server, dovecot, mail_ca):
    # An SMTP server that knows a password Dovecot does not.
    with SmtpServer("STARTTLS", {USER: "smtp-only"}, mail_ca) as smtp:
        err = expect_error(lambda: create(mailgate_server, provider(
            "Half", settings(smtp, mail_ca, password="smtp-only", inbound=imap_tls(dovecot)))))
    assert err.info.reason == "IMAP_AUTH_FAILED"
    assert err.info.metadata["side"] == "imap" and err.info.metadata["port"] == str(dovecot.imaps_port)
    assert "AUTHENTICATIONFAILED" in err.message or "Authentication failed" in err.message
    assert ("smtp.auth", "PASSED") in ids_and_outcomes(err.report)


def test_pop3_failure_is_named_pop3(mailgate_server, dovecot, mail_ca):
    with SmtpServer("STARTTLS", {USER: "smtp-only"}, mail_ca) as smtp:
        err = expect_error(lambda: create(mailgate_server, provider("Pop", settings(
            smtp, mail_ca, password="smtp-only", protocol="POP3",
            inbound=(dovecot.host, dovecot.pop3s_port, "TLS")))))
    assert err.info.reason == "POP3_AUTH_FAILED"


def test_untrusted_certificate_is_tls_failed(mailgate_server, smtp_server, dovecot, mail_ca, other_ca):
    s = settings(smtp_server("TLS"), mail_ca, inbound=imap_tls(dovecot))
    s.ca_certificates_pem = other_ca.ca_pem
    err = expect_error(lambda: create(mailgate_server, provider("Untrusted", s)))
    assert err.info.reason == "SMTP_TLS_FAILED"
    assert "certificate verify failed" in err.message
    assert "imap.tls" in err.info.metadata["failed_checks"]


def test_starttls_not_offered_is_tls_failed(mailgate_server, smtp_server, mail_ca):
    plain = smtp_server("NONE")
    s = settings(plain, mail_ca)
    s.smtp.security = provider_pb2.SECURITY_STARTTLS
    err = expect_error(lambda: create(mailgate_server, provider("NoTLS", s, receive=False)))
    assert err.info.reason == "SMTP_TLS_FAILED" and "STARTTLS" in err.message


def test_closed_port_is_connect_failed(mailgate_server, closed_port, mail_ca, smtp_server):
    s = settings(smtp_server("NONE"), mail_ca)
    s.smtp.port = closed_port.port
    err = expect_error(lambda: create(mailgate_server, provider("Closed", s, receive=False)))
    assert err.info.reason == "SMTP_CONNECT_FAILED"
    assert err.info.metadata["port"] == str(closed_port.port)


@pytest.mark.parametrize("side", ["smtp", "imap", "pop3"])
def test_silent_server_times_out_within_the_limit(mailgate_server, silent_listener, smtp_server,
                                                  dovecot, mail_ca, side):
    s = settings(smtp_server("NONE"), mail_ca, timeout_seconds=1, protocol="POP3" if side == "pop3" else "IMAP",
                 inbound=(dovecot.host, dovecot.pop3_port if side == "pop3" else dovecot.imap_port, "NONE"))
    target = s.smtp if side == "smtp" else s.inbound
    target.host, target.port = silent_listener.host, silent_listener.port
    started = time.monotonic()
    err = expect_error(lambda: create(mailgate_server, provider("Silent", s)))
    elapsed = time.monotonic() - started
    assert err.info.reason == f"{side.upper()}_TIMEOUT", err.message
    [failed] = [c for c in err.report.checks if c.outcome == Check.OUTCOME_FAILED]
    assert failed.id == f"{side}.connect" and failed.error_code == Check.ERROR_CODE_TIMEOUT
    assert elapsed < 5, f"a 1 s timeout took {elapsed:.1f} s"  # bounded, not hung


# ------------------------------------------------------------------ field rules
def test_receive_emails_needs_inbound_settings_and_ports_are_checked(mailgate_server, smtp_server, mail_ca):
    s = settings(smtp_server("NONE"), mail_ca)
    s.smtp.port = 70000
    err = expect_error(lambda: create(mailgate_server, provider("Fields", s)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.violations["provider.smtp_imap.inbound.host"] == "required when receive_emails is true"
    assert "between 1 and 65535" in err.violations["provider.smtp_imap.smtp.port"]
    s.smtp.port, s.password = 25, ""
    s.ca_certificates_pem = "not a certificate"
    err = expect_error(lambda: create(mailgate_server, provider("Fields", s, receive=False)))
    assert set(err.violations) == {"provider.smtp_imap.password", "provider.smtp_imap.ca_certificates_pem"}


def test_legacy_login_in_account_is_mapped_and_said(mailgate_server, smtp_server, dovecot, mail_ca):
    # "support" is a plain login name on both servers; its address goes in From name.
    s = settings(smtp_server("STARTTLS"), mail_ca, password="s3cret-support", inbound=imap_tls(dovecot))
    p = create(mailgate_server, provider("Legacy", s, account="support", from_name="support@example.test"))
    assert p.state == Provider.STATE_GREEN
    assert (p.account, p.smtp_imap.username, p.from_name) == ("support@example.test", "support", "")
    [notice] = p.notices
    assert notice.code == "LEGACY_ACCOUNT_MAPPED" and notice.field == "provider.account"
    assert "support" in notice.message
    stored = mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=p.name))
    assert stored.smtp_imap.username == "support" and not stored.notices


def test_presets_fill_well_known_servers_when_none_given():
    driver = SmtpImapDriver()
    for account, smtp, imap in (("a@gmail.com", "smtp.gmail.com", "imap.gmail.com"),
                                ("a@hotmail.com", "smtp-mail.outlook.com", "outlook.office365.com"),
                                ("a@contoso.onmicrosoft.com", "smtp-mail.outlook.com", "outlook.office365.com")):
        config, notices = driver.prepare(ProviderConfig(type="smtp_imap", account=account))
        assert config.settings["smtp"] == {"host": smtp, "port": 587, "security": "STARTTLS"}
        assert config.settings["inbound"] == {"host": imap, "port": 993, "security": "TLS"}
        assert {n.code for n in notices} == {"PRESET_APPLIED"}
    given = {"smtp": {"host": "mail.corp.test"}}
    config, notices = driver.prepare(ProviderConfig(type="smtp_imap", account="a@gmail.com", settings=given))
    assert config.settings["smtp"] == {"host": "mail.corp.test", "port": 587, "security": "STARTTLS"}
    assert [n.field for n in notices] == ["settings.inbound"]
    config, notices = driver.prepare(ProviderConfig(type="smtp_imap", account="a@example.test"))
    assert "smtp" not in config.settings and notices == []


# ------------------------------------------------------------------ update and activate
def test_update_rechecks_only_connection_changes(mailgate_server, dovecot, mail_ca):
    users = {USER: PASSWORD}
    with SmtpServer("STARTTLS", users, mail_ca) as smtp:
        p = create(mailgate_server, provider("Upd", settings(smtp, mail_ca, inbound=imap_tls(dovecot))))
        users[USER] = "rotated-on-the-server"
        # A cosmetic change does not log in, so the rotated password goes unnoticed.
        same = mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=Provider(name=p.name, from_name="Desk"),
            update_mask=field_mask_pb2.FieldMask(paths=["from_name"])))
        assert same.from_name == "Desk" and same.state == Provider.STATE_GREEN
        # A connection change logs in, and a failure leaves the provider as it was.
        err = expect_error(lambda: mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(timeout_seconds=5)),
            update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.timeout_seconds"]))))
        assert err.code == FAILED_PRECONDITION and err.info.reason == "SMTP_AUTH_FAILED"
        assert mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=p.name)).etag == same.etag
        users[USER] = PASSWORD


def test_a_stored_password_goes_only_to_the_servers_it_was_given_for(mailgate_server, smtp_server, dovecot,
                                                                     mail_ca):
    p = create(mailgate_server, provider("Bound", settings(smtp_server("STARTTLS"), mail_ca, inbound=imap_tls(dovecot))))
    elsewhere_users = CountingUsers({USER: PASSWORD})
    with SmtpServer("STARTTLS", elsewhere_users, mail_ca) as elsewhere:
        there = provider_pb2.Endpoint(host=elsewhere.host, port=elsewhere.port, security=provider_pb2.SECURITY_STARTTLS)

        def update(paths, validate_only=True, **fields):
            return mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
                provider=Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(**fields)),
                update_mask=field_mask_pb2.FieldMask(paths=paths), validate_only=validate_only))

        # The server, the login name or the trust anchors move: the password must come along.
        for paths, fields in ((["smtp_imap.smtp"], {"smtp": there}),
                              (["smtp_imap.smtp.host"], {"smtp": provider_pb2.Endpoint(host="localhost")}),
                              (["smtp_imap.username"], {"username": "someone-else"}),
                              (["smtp_imap.ca_certificates_pem"], {"ca_certificates_pem": mail_ca.ca_pem + "\n"})):
            for validate_only in (True, False):
                err = expect_error(lambda: update(paths, validate_only, **fields))
                assert err.code == grpc.StatusCode.INVALID_ARGUMENT, paths
                assert "give it again in the same request" in err.violations["provider.smtp_imap.password"]
        candidate = provider("Bound", settings(elsewhere, mail_ca, password=""), receive=False)
        err = expect_error(lambda: mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=candidate)))
        assert err.violations["provider.smtp_imap.password"] == "required"
        assert elsewhere_users.attempts == 0, "a stored password was presented to another server"
        assert mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=p.name)).smtp_imap.smtp.port == \
            smtp_server("STARTTLS").port
        # A setting that does not say where the password goes needs nothing more.
        assert update(["smtp_imap.folders"], folders=["INBOX", "Support"]).smtp_imap.folders == ["INBOX", "Support"]
        # Given again, the move is checked at the new server.
        moved = update(["smtp_imap.smtp", "smtp_imap.password"], validate_only=False, smtp=there, password=PASSWORD)
        assert moved.smtp_imap.smtp.port == elsewhere.port and moved.state == Provider.STATE_GREEN
        assert elsewhere_users.attempts == 1


def test_a_password_goes_unencrypted_only_when_the_provider_says_so(mailgate_server, smtp_server, mail_ca):
    plain = settings(smtp_server("NONE"), mail_ca, allow_plaintext_login=False)
    err = expect_error(lambda: create(mailgate_server, provider("Plain", plain, receive=False)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NONE sends the credentials unencrypted" in err.violations["provider.smtp_imap.smtp.security"]
    assert not mailgate_server.stub.ListProviders(pb.ListProvidersRequest()).providers
    plain.allow_plaintext_login = True
    assert create(mailgate_server, provider("Plain", plain, receive=False)).state == Provider.STATE_GREEN


def test_activate_turns_red_with_reason_then_green(mailgate_server, dovecot, mail_ca):
    users = {USER: PASSWORD}
    with SmtpServer("STARTTLS", users, mail_ca) as smtp:
        p = create(mailgate_server, provider("Act", settings(smtp, mail_ca), receive=False))
        users[USER] = "changed-by-the-mail-admin"
        red = mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
        assert red.provider.state == Provider.STATE_RED
        assert "SMTP authentication failed" in red.provider.state_reason
        assert red.provider.state_time.ToNanoseconds() > p.state_time.ToNanoseconds()
        assert not red.report.ok
        # The administrator types in the new password: checked at once, GREEN again.
        fixed = mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(
                password="changed-by-the-mail-admin")),
            update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.password"])))
        assert fixed.state == Provider.STATE_GREEN


def test_failed_logins_back_off_instead_of_hammering(mailgate_server, mail_ca):
    users = CountingUsers({USER: PASSWORD})
    with SmtpServer("STARTTLS", users, mail_ca) as smtp:
        p = create(mailgate_server, provider("Lockout", settings(smtp, mail_ca), receive=False))
        users[USER] = "changed"
        before = users.attempts
        first = mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
        second = mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
        assert users.attempts == before + 1, "the same refused credentials were sent twice"
        assert first.provider.state == second.provider.state == Provider.STATE_RED
        [auth] = [c for c in second.report.checks if c.id == "smtp.auth"]
        assert auth.error_code == Check.ERROR_CODE_BACKOFF
        assert "not retried" in second.provider.state_reason
        # Validating a candidate with the same wrong password is refused with RetryInfo.
        err = expect_error(lambda: mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(
            provider=provider("Lockout 2", settings(smtp, mail_ca, password=PASSWORD), receive=False))))
        assert err.info.reason == "SMTP_BACKOFF" and err.retry.retry_delay.ToNanoseconds() > 0
        assert users.attempts == before + 1
        # A corrected password goes through at once.
        users[USER] = "corrected"
        fixed = mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
            provider=Provider(name=p.name, smtp_imap=provider_pb2.SmtpImapSettings(password="corrected")),
            update_mask=field_mask_pb2.FieldMask(paths=["smtp_imap.password"])))
        assert fixed.state == Provider.STATE_GREEN and users.attempts == before + 2


def test_password_never_in_logs_responses_or_the_database(mailgate_server, mailgate_database_url, tmp_path,
                                                          smtp_server, dovecot, mail_ca, caplog):
    caplog.set_level(logging.DEBUG)  # imapclient, smtplib's callers, mailgate, grpc: everything
    wrong = settings(smtp_server("STARTTLS"), mail_ca, password="Wr0ng-pa55word!", inbound=imap_tls(dovecot))
    expect_error(lambda: create(mailgate_server, provider("Leak", wrong)))
    p = create(mailgate_server, provider("Leak", settings(smtp_server("STARTTLS"), mail_ca,
                                                          inbound=imap_tls(dovecot))))
    mailgate_server.stub.ActivateProvider(pb.ActivateProviderRequest(name=p.name))
    got = mailgate_server.stub.GetProvider(pb.GetProviderRequest(name=p.name))
    for secret in (PASSWORD, "Wr0ng-pa55word!"):
        assert all(secret not in r.getMessage() for r in caplog.records), secret
        assert secret.encode() not in got.SerializeToString()
    if mailgate_database_url.startswith("sqlite"):
        mailgate_server.stop()
        assert PASSWORD.encode() not in b"".join(f.read_bytes() for f in tmp_path.glob("mailgate.db*"))
