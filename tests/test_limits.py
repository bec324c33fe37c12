"""A limit on everything a caller sends (server/limits.py), errors that always reach
the client whole, admission limits, and malformed input that is INVALID_ARGUMENT,
never INTERNAL. Through the gRPC API with the example `echo` driver."""
from __future__ import annotations

import base64
import json
import queue
import random
import time
from email.message import EmailMessage

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mailgate_echo_driver
from mailgate.server import limits
from mailgate.server.errors import InvalidArgument, Violation
from mailgate.server.inbound.queue import Subscription
from mailgate.server.rpc_errors import to_status
from mailgate.testing.consumer import Consumer
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.rpc import expect_error
from mailgate.v1 import (inbound_service_pb2 as ipb, inbound_service_pb2_grpc, mail_service_pb2 as mpb,
                         mail_service_pb2_grpc, provider_pb2, provider_service_pb2 as pb, token_service_pb2 as tpb,
                         token_service_pb2_grpc)


Provider = provider_pb2.Provider
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def echo(name="Support line", **fields) -> Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hello", "api_key": "let-me-in", **fields.pop("settings", {})})
    fields.setdefault("account", "support@example.test")
    fields.setdefault("display_name", name)
    return Provider(type="echo", plugin_settings=settings, **fields)


def create(server, provider: Provider) -> Provider:
    return server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider))


def mail(server) -> mail_service_pb2_grpc.MailServiceStub:
    return mail_service_pb2_grpc.MailServiceStub(server.channel)


def inbound(server) -> inbound_service_pb2_grpc.InboundServiceStub:
    return inbound_service_pb2_grpc.InboundServiceStub(server.channel)


def inbound_mail(n: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "c@example.test", "inbox@example.test", f"message {n}"
    m["Message-ID"] = f"<m{n}.{time.monotonic_ns()}@example.test>"
    m.set_content(f"body {n}")
    return bytes(m)


def commit(server, provider: str, messages: list[tuple[int, bytes]]) -> list[str]:
    """What a mailbox watcher does when it has fetched messages."""
    return server.app.inbound.commit(provider.split("/")[1], "INBOX", 1, messages)


def nothing_stored(server) -> bool:
    return not server.stub.ListProviders(pb.ListProvidersRequest()).providers


# --- every field has a maximum ------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("from_name", "x" * 10_000),
    ("display_name", "x" * 201),
    ("campaign", "c" * 201),
    ("account", "a" * 300 + "@example.test"),
])
def test_provider_fields_over_their_limit_are_field_violations_and_nothing_is_stored(mailgate_server, field, value):
    err = expect_error(lambda: create(mailgate_server, echo(**{field: value})))
    assert err.code == INVALID
    assert "at most" in err.violations[f"provider.{field}"]
    assert nothing_stored(mailgate_server)


def test_reply_to_has_a_maximum_of_entries(mailgate_server):
    err = expect_error(lambda: create(mailgate_server, echo(reply_to=[f"r{i}@example.test" for i in range(21)])))
    assert err.code == INVALID and "at most 20" in err.violations["provider.reply_to"]
    assert nothing_stored(mailgate_server)


def test_settings_and_secrets_have_maximums(mailgate_server):
    err = expect_error(lambda: create(mailgate_server, echo(settings={"greeting": "g" * 5000, "api_key": "k" * 5000})))
    assert err.code == INVALID
    assert "at most 998" in err.violations["provider.plugin_settings.greeting"]
    assert "at most 4,096" in err.violations["provider.plugin_settings.api_key"]
    err = expect_error(lambda: create(mailgate_server, echo(settings={f"extra{i}": i for i in range(300)})))
    assert "at most 200 values" in err.violations["provider.plugin_settings"]
    assert nothing_stored(mailgate_server)


def test_a_control_character_in_a_campaign_or_a_text_setting_is_refused(mailgate_server):
    err = expect_error(lambda: create(mailgate_server, echo(campaign="sales\x00", settings={"greeting": "a\nb"})))
    assert set(err.violations) == {"provider.campaign", "provider.plugin_settings.greeting"}


def test_a_request_over_its_methods_size_is_refused_before_it_is_parsed(mailgate_server):
    err = expect_error(lambda: create(mailgate_server, echo(from_name="x" * (2 << 20))))
    assert err.code == INVALID and "at most 1,048,576 bytes" in err.violations["request"]
    assert nothing_stored(mailgate_server)


def test_update_mask_paths_are_bounded_and_not_echoed_whole(mailgate_server):
    p = create(mailgate_server, echo())
    from google.protobuf import field_mask_pb2
    err = expect_error(lambda: mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name), update_mask=field_mask_pb2.FieldMask(paths=["x" * 5000]))))
    assert err.code == INVALID and len(err.violations["update_mask"]) < 200
    err = expect_error(lambda: mailgate_server.stub.UpdateProvider(pb.UpdateProviderRequest(
        provider=Provider(name=p.name), update_mask=field_mask_pb2.FieldMask(paths=["from_name"] * 101))))
    assert "at most 100 paths" in err.violations["update_mask"]


# --- user names with CR or LF ---------------------------------------------------------------

def smtp_imap(closed_port, **settings) -> Provider:
    account = settings.pop("account", "agent@example.test")
    from_name = settings.pop("from_name", "")
    return Provider(display_name="Mailbox", type="smtp_imap", account=account, from_name=from_name,
                    smtp_imap=provider_pb2.SmtpImapSettings(
                        password=settings.pop("password", "secret"),
                        smtp=provider_pb2.Endpoint(host=closed_port.host, port=closed_port.port,
                                                   security=provider_pb2.SECURITY_TLS), **settings))


@pytest.mark.parametrize("username", ["agent\r\nA1 DELETE INBOX", "agent\n", "agent\rx"])
def test_a_username_with_cr_or_lf_is_a_field_violation(mailgate_server, closed_port, username):
    err = expect_error(lambda: create(mailgate_server, smtp_imap(closed_port, username=username)))
    assert err.code == INVALID and "line breaks" in err.violations["provider.smtp_imap.username"]


def test_a_login_in_account_with_cr_or_lf_is_a_field_violation(mailgate_server, closed_port):
    # The admin screen's habit: login in Account, address in From name; the login becomes the username.
    err = expect_error(lambda: create(mailgate_server, smtp_imap(closed_port, account="agent\r\nA1 LOGOUT",
                                                                 from_name="agent@example.test")))
    assert err.code == INVALID and "provider.smtp_imap.username" in err.violations


def test_a_username_and_a_password_have_maximums_and_a_password_no_line_break(mailgate_server, closed_port):
    err = expect_error(lambda: create(mailgate_server, smtp_imap(closed_port, username="u" * 321)))
    assert "at most 320" in err.violations["provider.smtp_imap.username"]
    err = expect_error(lambda: create(mailgate_server, smtp_imap(closed_port, password="p" * 5000)))
    assert "at most 4,096" in err.violations["provider.smtp_imap.password"]
    err = expect_error(lambda: create(mailgate_server, smtp_imap(closed_port, password="pw\r\nA1 LOGOUT")))
    assert "CR, LF" in err.violations["provider.smtp_imap.password"]


# --- sending --------------------------------------------------------------------------------

@pytest.fixture
def sender(mailgate_server) -> str:
    return create(mailgate_server, echo()).name


def send(server, provider: str, **fields):
    fields.setdefault("text_body", "hello")
    return mail(server).SendEmail(mpb.SendEmailRequest(provider=provider, **fields))


def test_recipients_over_the_cap_are_refused_before_any_is_parsed(mailgate_server, sender):
    # 100,000 entries that are no addresses: only the count is looked at, so the one
    # violation is the count (parsing them would have named each).
    err = expect_error(lambda: send(mailgate_server, sender, to=["not an address"] * 100_000))
    assert err.code == INVALID
    assert set(err.violations) == {"recipients"}
    assert "at most 1,000 recipients" in err.violations["recipients"] and "100,000" in err.violations["recipients"]
    listed = mail(mailgate_server).ListOutboundMessages(mpb.ListOutboundMessagesRequest()).outbound_messages
    assert not listed


def test_the_recipient_cap_is_a_server_setting(tmp_path, mailgate_database_url):
    settings = make_settings(tmp_path, mailgate_database_url, max_recipients=3)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        p = create(server, echo()).name
        err = expect_error(lambda: send(server, p, to=["a@example.test", "b@example.test"],
                                        cc=["c@example.test"], bcc=["d@example.test"]))
        assert "at most 3 recipients" in err.violations["recipients"]
        assert send(server, p, to=["a@example.test"], bcc=["d@example.test"]).name


@pytest.mark.parametrize("fields, path", [
    ({"subject": "s" * 999}, "subject"),
    ({"to": ["x" * 310 + "@example.test"]}, "to[0]"),
    ({"request_id": "r" * 201}, "request_id"),
    ({"request_id": "id\x00"}, "request_id"),
    ({"reply_to_message_id": "<" + "m" * 1000 + "@example.test>"}, "reply_to_message_id"),
    ({"attachments": [mpb.Attachment(filename="f" * 256, data=b"x")]}, "attachments[0].filename"),
    ({"attachments": [mpb.Attachment(filename="f", data=b"x")] * 101}, "attachments"),
])
def test_send_fields_over_their_limit_are_field_violations(mailgate_server, sender, fields, path):
    fields.setdefault("to", ["jane@example.test"])
    err = expect_error(lambda: send(mailgate_server, sender, **fields))
    assert err.code == INVALID and path in err.violations


# --- errors stay small ------------------------------------------------------------------------

def test_recipients_are_parsed_only_until_an_answer_is_full(mailgate_server, sender):
    # 1,000 entries of hostile garbage, each costing milliseconds to parse: parsing stops
    # at what one answer can list.
    garbage = ['"' * 300 + str(i) for i in range(1000)]
    err = expect_error(lambda: send(mailgate_server, sender, to=garbage))
    assert err.code == INVALID and len(err.violations) == limits.VIOLATIONS
    assert "to[18]" in err.violations and "to[19]" not in err.violations
    assert "not checked" in err.violations["recipients"]


def test_an_answer_with_thousands_of_violations_reaches_the_client_with_its_details(mailgate_server, sender):
    # 1,000 recipients of 990 characters each: each is a violation.
    bad = [f"{i:04d}" + "x" * 986 for i in range(1000)]
    err = expect_error(lambda: send(mailgate_server, sender, to=bad))
    assert err.code == INVALID and err.info.reason == "INVALID_ARGUMENT"
    assert len(err.violations) == limits.VIOLATIONS + 1
    assert "to[0]" in err.violations and "to[19]" in err.violations
    assert "this and 979 more violation(s)" in err.violations["to[20]"] and "1,000 in all" in err.violations["to[20]"]
    assert all(len(d) <= limits.VIOLATION_DESCRIPTION for d in err.violations.values())
    assert len(err.message.encode()) <= limits.MESSAGE_BYTES


def test_a_status_stays_small_whatever_the_error_holds():
    huge = InvalidArgument([Violation("f" * 10_000 + str(i), "d" * 100_000) for i in range(5000)])
    status = to_status(huge)
    assert status.ByteSize() < 6000  # far under the 8 KB clients accept in trailers
    assert len(status.message.encode()) <= limits.MESSAGE_BYTES


def test_a_huge_name_is_refused_without_being_echoed(mailgate_server):
    err = expect_error(lambda: mailgate_server.stub.GetProvider(pb.GetProviderRequest(name="providers/" + "x" * 900_000)))
    assert err.code == INVALID and len(err.violations["name"]) < 200


# --- streams ------------------------------------------------------------------------------------

def first_request_refused(server, request) -> dict[str, str]:
    call = inbound(server).StreamInboundMail(iter([request]))
    err = expect_error(lambda: list(call))
    assert err.code == INVALID
    return err.violations


def test_consumer_names_and_campaigns_have_maximums(mailgate_server):
    v = first_request_refused(mailgate_server, ipb.StreamInboundMailRequest(campaign="billing", consumer="c" * 10_000))
    assert "at most 200" in v["consumer"]
    v = first_request_refused(mailgate_server, ipb.StreamInboundMailRequest(campaign="b" * 201, consumer="c"))
    assert "at most 200" in v["campaign"]
    v = first_request_refused(mailgate_server, ipb.StreamInboundMailRequest(campaign="billing", consumer="c\nFAKE LOG"))
    assert "line breaks" in v["consumer"]
    v = first_request_refused(mailgate_server, ipb.StreamInboundMailRequest(
        providers=[f"providers/p{i}" for i in range(101)], consumer="c"))
    assert "at most 100" in v["providers"]


def test_ack_ids_are_bounded_and_a_malformed_one_is_ignored(mailgate_server):
    stub = inbound(mailgate_server)
    err = expect_error(lambda: stub.AckInboundMail(ipb.AckInboundMailRequest(ack_ids=["a.b"] * 10_001)))
    assert err.code == INVALID and "at most 10,000" in err.violations["ack_ids"]
    err = expect_error(lambda: stub.AckInboundMail(ipb.AckInboundMailRequest(ack_ids=["a" * 200])))
    assert "ack_ids[0]" in err.violations
    stub.AckInboundMail(ipb.AckInboundMailRequest(ack_ids=["x\x00.y", "\u00e9.\u00e9", "."]))  # named nothing: ignored


def test_a_deadline_change_over_the_maximum_is_refused(mailgate_server):
    c = Consumer(mailgate_server)
    try:
        c.requests.put(ipb.StreamInboundMailRequest(modify_deadline_ack_ids=["a.b"], modify_deadline_seconds=[10**6]))
        with pytest.raises(grpc.RpcError) as e:
            c.take(1)
        assert e.value.code() == INVALID
    finally:
        c.close()


# --- tokens ---------------------------------------------------------------------------------------

def test_token_fields_with_control_characters_are_refused(mailgate_server):
    stub = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    err = expect_error(lambda: stub.CreateToken(tpb.CreateTokenRequest(token=tpb.Token(
        display_name="reader\x00", permissions=["mail.read"], campaigns=["a\nb"], providers=["providers/a\x00"]))))
    assert err.code == INVALID
    assert {"token.display_name", "token.campaigns[0]", "token.providers[0]"} <= set(err.violations)


# --- page tokens and filters ------------------------------------------------------------------------

def pages_of(server, n: int) -> str:
    for i in range(n):
        create(server, echo(name=f"P{i}"))
    return server.stub.ListProviders(pb.ListProvidersRequest(page_size=1)).next_page_token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_tokens_are_authenticated(mailgate_server):
    token = pages_of(mailgate_server, 3)
    assert mailgate_server.stub.ListProviders(pb.ListProvidersRequest(page_size=1, page_token=token)).providers
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload = raw[:-16]  # a 128-bit MAC follows
    data = json.loads(payload)
    data["i"] = "' OR 1=1 --"
    forged = [
        _b64(json.dumps(data).encode()),                       # a plain token of the old shape
        _b64(json.dumps(data).encode() + raw[len(payload):]),  # altered, the MAC kept
        _b64(raw[:-1] + bytes([raw[-1] ^ 1])),                 # one bit of the MAC flipped
        token[:-2],                                            # cut short
    ]
    for t in forged:
        err = expect_error(lambda: mailgate_server.stub.ListProviders(pb.ListProvidersRequest(page_size=1,
                                                                                              page_token=t)))
        assert err.code == INVALID and "page_token" in err.violations, t


def test_a_page_token_of_one_list_is_refused_by_another(mailgate_server):
    token = pages_of(mailgate_server, 2)
    err = expect_error(lambda: mail(mailgate_server).ListOutboundMessages(
        mpb.ListOutboundMessagesRequest(page_token=token)))
    assert err.code == INVALID and "page_token" in err.violations


@pytest.mark.parametrize("text", [
    r'campaign = "\x"', r'campaign = "\ud800"', r'campaign = "\udfff\ud800"', r'campaign = "\u0000"',
    r'campaign = "a\u0007b"', 'campaign = "' + "x" * 2000 + '"', r'provider = "providers/a\u0000"',
    r'conversation_id = "\"', r'campaign = "\u12"',
])
def test_a_bad_filter_value_is_invalid_argument_on_filter(mailgate_server, text):
    err = expect_error(lambda: inbound(mailgate_server).ListInboundMessages(ipb.ListInboundMessagesRequest(filter=text)))
    assert err.code == INVALID and "filter" in err.violations


def test_bytes_that_are_not_a_request_are_invalid_argument(mailgate_server):
    raw = mailgate_server.channel.unary_unary("/mailgate.v1.ProviderService/GetProvider",
                                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for data in (b"\x0a\x03\xff\xfe\xfd", b"\x0a\x05abc", b"\xff\xff\xff"):
        err = expect_error(lambda: raw(data))
        assert err.code == INVALID and "request" in err.violations


def _fuzz_strings(rng: random.Random, n: int) -> list[str]:
    pieces = ['"', "\\", "=", " AND ", "campaign", "state", "provider", "providers/", "STATE_RED", r"\u", "d800",
              r"\x", r"\u0000", r"\"", "\x00", "\n", "é", "💌", "/", "..", "%", "'", "--", "true", "(", ")"]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append("".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))))
        elif kind < 0.7:
            out.append("".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 40))))
        elif kind < 0.9:
            out.append(_b64(rng.randbytes(rng.randint(0, 80))))
        else:
            out.append(rng.choice(pieces) * rng.randint(100, 3000))
    return out


def test_fuzzed_filters_page_tokens_and_names_are_never_internal(mailgate_server):
    pages_of(mailgate_server, 2)
    rng = random.Random(15)
    ok = {grpc.StatusCode.OK, INVALID, grpc.StatusCode.NOT_FOUND}
    providers, inbound_stub, mail_stub = mailgate_server.stub, inbound(mailgate_server), mail(mailgate_server)
    tokens = token_service_pb2_grpc.TokenServiceStub(mailgate_server.channel)
    calls = [
        lambda s: providers.ListProviders(pb.ListProvidersRequest(filter=s)),
        lambda s: inbound_stub.ListInboundMessages(ipb.ListInboundMessagesRequest(filter=s)),
        lambda s: mail_stub.ListOutboundMessages(mpb.ListOutboundMessagesRequest(filter=s)),
        lambda s: providers.ListProviders(pb.ListProvidersRequest(page_token=s)),
        lambda s: tokens.ListTokens(tpb.ListTokensRequest(page_token=s)),
        lambda s: inbound_stub.ListInboundMessages(ipb.ListInboundMessagesRequest(page_token=s)),
        lambda s: providers.GetProvider(pb.GetProviderRequest(name=s)),
        lambda s: providers.GetProvider(pb.GetProviderRequest(name="providers/" + s)),
        lambda s: inbound_stub.GetInboundMessage(ipb.GetInboundMessageRequest(name="inboundMessages/" + s)),
        lambda s: inbound_stub.RequeueInboundMessage(ipb.RequeueInboundMessageRequest(name=s)),
        lambda s: mail_stub.GetOutboundMessage(mpb.GetOutboundMessageRequest(name="outboundMessages/" + s)),
        lambda s: tokens.DeleteToken(tpb.DeleteTokenRequest(name="tokens/" + s)),
        lambda s: inbound_stub.AckInboundMail(ipb.AckInboundMailRequest(ack_ids=[s])),
    ]
    for call in calls:
        for text in _fuzz_strings(rng, 40):
            try:
                call(text)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            assert code in ok, (text, code)


# --- admission --------------------------------------------------------------------------------------

def test_calls_beyond_the_concurrency_limit_are_resource_exhausted(tmp_path, mailgate_database_url):
    with ServerThread(make_settings(tmp_path, mailgate_database_url, max_concurrent_calls=2),
                      [mailgate_echo_driver]) as server:
        streams = [Consumer(server, name=f"c{i}") for i in range(2)]
        try:
            deadline = time.monotonic() + 10
            while server.app.inbound.consumers(["campaign:billing"]) < 2:  # both streams under way
                assert time.monotonic() < deadline, "the streams did not start"
                time.sleep(0.05)
            err = expect_error(lambda: server.stub.ListDrivers(pb.ListDriversRequest()))
            assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.info.reason == "RESOURCE_EXHAUSTED" and err.info.metadata["limit"] == "concurrent_calls"
            assert err.retry_delay and err.retry_delay > 0
            assert "2 calls under way" in err.message
            health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # a probe still answers
        finally:
            for c in streams:
                c.close()
        deadline = time.monotonic() + 10
        while True:  # and once they end, calls go through again
            try:
                assert server.stub.ListDrivers(pb.ListDriversRequest()).drivers
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.05)


def test_send_email_beyond_the_byte_budget_is_resource_exhausted_with_retry_info(mailgate_server, sender):
    budget = mailgate_server.app.outbox.budget
    assert budget.total == limits.DEFAULT_SEND_BUDGET_BYTES
    mailgate_server.call(budget.acquire(budget.total))  # as if big calls held it all

    async def release() -> None:
        budget.release(budget.total)
    try:
        err = expect_error(lambda: send(mailgate_server, sender, to=["jane@example.test"]))
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_delay and err.retry_delay > 0
        assert err.info.reason == "RESOURCE_EXHAUSTED"
    finally:
        mailgate_server.call(release())
    assert budget.used == 0
    assert send(mailgate_server, sender, to=["jane@example.test"]).name
    assert budget.used == 0  # given back when the call ended


def test_a_claim_reads_at_most_its_byte_limit_of_raw_mail(tmp_path, mailgate_database_url):
    settings = make_settings(tmp_path, mailgate_database_url, claim_bytes=250_000)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        p = create(server, echo(campaign="billing")).name
        big = (b"y" * 998 + b"\n") * 100  # ~100 KB of body each
        commit(server, p, [(n, inbound_mail(n) + big) for n in range(1, 6)])
        sub = Subscription(campaign="billing", provider_ids=[], consumer="c", max_in_flight=10, deadline=60)
        _, first = server.call(server.app.inbound.claim(sub, 10, holder=""))
        assert len(first) == 2 and sum(len(d.message.raw) for d in first) <= 250_000
        _, second = server.call(server.app.inbound.claim(sub, 10, holder=""))
        assert [d.message.seq for d in second] == [first[-1].message.seq + 1, first[-1].message.seq + 2]
        # A stream takes what is left claim after claim, in order.
        requests: queue.Queue = queue.Queue()
        requests.put(ipb.StreamInboundMailRequest(campaign="billing", consumer="s", max_in_flight=10))
        call = inbound(server).StreamInboundMail(iter(requests.get, None))
        try:
            got = next(iter(call)).received_messages
            assert [m.message.subject for m in got] == ["message 5"]
        finally:
            requests.put(None)
            call.cancel()
