"""The network policy: a caller names a mail server, mailgate connects only where
the policy allows (checks, sending), by the address the name resolves to."""
from __future__ import annotations

import ipaddress

import pytest

from mailgate.drivers import network
from mailgate.drivers.network import NetworkPolicy
from mailgate.server.config import ConfigError
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.servers.smtpd import SmtpServer
from mailgate.v1 import mail_service_pb2 as mpb, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb

from support import PASSWORD, USER, mail, make_provider, wait_state

Out = mpb.OutboundMessage


def refused(policy: NetworkPolicy, address: str) -> bool:
    return policy.refuses(ipaddress.ip_address(address)) is not None


def test_the_default_refuses_what_no_company_mail_server_is_and_allows_private_networks():
    default = NetworkPolicy.parse()
    for address in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1",
                    "0.0.0.0", "224.0.0.251", "255.255.255.255"):
        assert refused(default, address), address
    for address in ("10.1.2.3", "172.16.0.9", "192.168.1.10", "fd00::25", "198.51.100.7", "2001:db8::25"):
        assert not refused(default, address), address


def test_the_longest_prefix_decides_and_allow_wins_a_tie():
    locked = NetworkPolicy.parse(allow="10.20.0.0/16, 2001:db8:25::/48", deny="0.0.0.0/0,::/0")
    assert not refused(locked, "10.20.3.4") and not refused(locked, "2001:db8:25::1")
    assert refused(locked, "10.21.0.1") and refused(locked, "198.51.100.7") and refused(locked, "2001:db8::1")
    carve = NetworkPolicy.parse(allow="127.0.0.0/8", deny="127.0.0.53/32")
    assert not refused(carve, "127.0.0.1") and refused(carve, "127.0.0.53")
    with pytest.raises(ValueError, match="MAILGATE_NETWORK_ALLOW: '10.0.0.300/8'"):
        NetworkPolicy.parse(allow="10.0.0.300/8")


@pytest.fixture
def locked_down(tmp_path, mailgate_database_url):
    """A server with the default policy: loopback, where the test servers are, refused."""
    with ServerThread(make_settings(tmp_path, mailgate_database_url, network_allow="")) as server:
        yield server


def test_a_check_of_a_refused_address_fails_before_any_connection(locked_down, silent_listener):
    for host in ("127.0.0.1", "localhost", "169.254.169.254"):  # a name is judged by its addresses
        report = locked_down.stub.ValidateProvider(pb.ValidateProviderRequest(provider=provider_pb2.Provider(
            display_name="Candidate", type="smtp_imap", account=USER, smtp_imap=provider_pb2.SmtpImapSettings(
                password=PASSWORD, smtp=provider_pb2.Endpoint(host=host, port=silent_listener.port))))).report
        [connect] = [c for c in report.checks if c.id == "smtp.connect"]
        assert connect.outcome == connect.OUTCOME_FAILED and "network policy refuses" in connect.server_message
        assert connect.error_code == connect.ERROR_CODE_CONNECT_FAILED
    assert silent_listener.connections == 0


def test_mail_to_a_server_the_policy_now_refuses_waits_and_says_why(mailgate_server, mail_ca, mail_users):
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca) as smtp:
        p = make_provider(mailgate_server, smtp, mail_ca)
        previous = network.use(NetworkPolicy.parse(deny="127.0.0.0/8"))
        try:
            sent = mail(mailgate_server).SendEmail(mpb.SendEmailRequest(
                provider=p.name, to=["jane@example.test"], subject="held", text_body="x"))
            assert sent.state == Out.STATE_RETRYING and "network policy refuses" in sent.last_error.message
        finally:
            network.use(previous)
        assert not smtp.messages
        assert wait_state(mailgate_server, sent.name, Out.STATE_SENT).state == Out.STATE_SENT  # allowed again


def test_a_bad_policy_stops_the_server_at_start(tmp_path):
    with pytest.raises(ConfigError, match="MAILGATE_NETWORK_DENY"):
        ServerThread(make_settings(tmp_path, network_deny="not-a-network")).start()
