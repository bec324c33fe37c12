"""mailgate.drivers.transport.SmtpPool against real aiosmtpd servers (NONE, STARTTLS, TLS)."""
from __future__ import annotations

import asyncio
import base64
import logging
import pickle
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailgate.drivers.api import ErrorCode
from mailgate.drivers.transport import (
    Endpoint, LoginThrottle, PasswordAuth, SendError, SendResult, SmtpPool)
from mailgate.testing.servers import SmtpServer, free_ports
from mailgate.testing.clock import FakeClock
from mailgate.testing.oracles import smtplib_send

AGENT = "agent@example.test"
MODES = ("NONE", "STARTTLS", "TLS")
KEY = "provider-1:settings-digest"


@pytest.fixture
def throttle() -> LoginThrottle:
    """A throttle of the test's own: tests never share failures through default_throttle."""
    return LoginThrottle(base=5.0, factor=2.0, cap=60.0, clock=FakeClock())


_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(autouse=True)
def loop():
    """The event loop the pools run on, in a thread of its own as in the server:
    pool_send() submits to it from the test's threads."""
    global _loop
    _loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_loop.run_forever, daemon=True)
    thread.start()
    yield _loop
    _loop.call_soon_threadsafe(_loop.stop)
    thread.join(10)
    _loop.close()


@pytest.fixture
def pool():
    pool = SmtpPool()
    yield pool
    pool.close()


def raw_message(n: int = 0, body: str = "Hello.") -> bytes:
    """CRLF-terminated, with lines that need dot-stuffing (a lone "." would end DATA)."""
    return (f"From: {AGENT}\r\nTo: rcpt@example.test\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@example.test>\r\n\r\n{body}\r\n.\r\n..two dots\r\n.leading\r\nend\r\n"
            ).encode("utf-8")


def send(pool: SmtpPool, server: SmtpServer, mail_ca, *, key: str = KEY, user: str = AGENT,
         password: str = "s3cret-agent", recipients=("rcpt@example.test",), raw: bytes | None = None,
         timeout: float = 5, **kwargs) -> SendResult:
    endpoint = Endpoint(server.host, server.port, getattr(server, "mode", "NONE"))
    return pool_send(pool, key, endpoint, PasswordAuth(user, password), timeout=timeout,
                     ca_pem=mail_ca.ca_pem, mail_from=AGENT, recipients=list(recipients),
                     raw=raw_message() if raw is None else raw, **kwargs)


def pool_send(pool: SmtpPool, *args, **kwargs) -> SendResult:
    """pool.send on the test's event loop (see the loop fixture), waited for."""
    return asyncio.run_coroutine_threadsafe(pool.send(*args, **kwargs), _loop).result(60)


def send_error(*args, **kwargs) -> SendError:
    with pytest.raises(SendError) as info:
        send(*args, **kwargs)
    return info.value


def idle_socket(pool: SmtpPool, key: str = KEY):
    """The socket of the key's (only) idle connection."""
    (sock,) = pool.idle_sockets(key)
    return sock


@pytest.fixture
def own_server(mail_users, mail_ca):
    """own_server(mode) -> a started SmtpServer of the test's own (tests that stop it)."""
    servers: list[SmtpServer] = []

    def make(mode: str) -> SmtpServer:
        server = SmtpServer(mode, dict(mail_users), mail_ca).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------------------
# sending and reuse


@pytest.mark.parametrize("mode", MODES)
def test_one_connection_carries_many_messages(mode, smtp_server, mail_ca, pool):
    server = smtp_server(mode)
    raws = [raw_message(i) for i in range(20)]
    for raw in raws:
        result = send(pool, server, mail_ca, raw=raw)
        assert result == SendResult(250, "2.0.0 OK", {})
    assert pool.stats() == {"opened": 1, "reused": 19, "replaced": 0, "idle": 1}
    received = server.wait_for_messages(20)
    assert [m.content for m in received] == raws  # exact bytes, dot-stuffing undone by the server
    assert {(m.mail_from, tuple(m.rcpt_tos), m.login) for m in received} == {
        (AGENT, ("rcpt@example.test",), AGENT)}
    assert received[0].mail_options == [f"SIZE={len(raws[0])}"]  # no SMTPUTF8/8BITMIME when ASCII


@pytest.mark.parametrize("mode", MODES)
def test_a_message_far_larger_than_the_socket_buffers(mode, smtp_server, mail_ca, pool):
    """Sent on the event loop in many writes, waiting whenever the socket is full (TLS too)."""
    server = smtp_server(mode)
    raw = raw_message(7, body="\r\n".join(f".line {i:07d} " + "x" * 60 for i in range(60_000)))
    assert len(raw) > 4_000_000
    assert send(pool, server, mail_ca, raw=raw).code == 250
    assert send(pool, server, mail_ca, raw=raw_message(8)).code == 250  # the connection is still in step
    assert [m.content for m in server.wait_for_messages(2)] == [raw, raw_message(8)]
    assert pool.stats()["opened"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_end_of_the_data_waits_for_the_handover(mode, smtp_server, mail_ca, pool):
    """Envelope and content may go first; the server takes the message only once
    the handover returns (the outbox: once the message is stored)."""
    server = smtp_server(mode)
    called, release = threading.Event(), asyncio.Event()

    async def handover() -> None:
        called.set()
        await release.wait()

    pending = asyncio.run_coroutine_threadsafe(pool.send(
        KEY, Endpoint(server.host, server.port, mode), PasswordAuth(AGENT, "s3cret-agent"), timeout=5,
        ca_pem=mail_ca.ca_pem, mail_from=AGENT, recipients=["rcpt@example.test"], raw=raw_message(1),
        handover=handover), _loop)
    assert called.wait(10)
    time.sleep(0.3)  # were the end of the data sent, the server would have the message by now
    assert server.messages == [] and not pending.done()
    _loop.call_soon_threadsafe(release.set)
    assert pending.result(10) == SendResult(250, "2.0.0 OK", {})
    assert [m.content for m in server.wait_for_messages(1)] == [raw_message(1)]
    assert send(pool, server, mail_ca, raw=raw_message(2)).code == 250  # and the connection is reused
    assert pool.stats()["opened"] == 1


def test_a_refused_handover_hands_nothing_over(smtp_server, mail_ca, pool):
    server = smtp_server("STARTTLS")
    assert send(pool, server, mail_ca, raw=raw_message(1)).code == 250

    async def refuse() -> None:
        raise LookupError("not stored")

    with pytest.raises(LookupError):
        send(pool, server, mail_ca, raw=raw_message(2), handover=refuse)
    assert pool.stats()["idle"] == 0  # the connection was closed in the middle of DATA
    assert send(pool, server, mail_ca, raw=raw_message(3)).code == 250
    server.wait_for_messages(2)
    time.sleep(0.2)
    assert [m.content for m in server.messages] == [raw_message(1), raw_message(3)]
    assert server.handler.rejected == []


def test_connections_send_without_nagle_delay(smtp_server, mail_ca, pool):
    """The end of the data is a small write of its own: Nagle would hold it ~40 ms."""
    server = smtp_server("NONE")
    send(pool, server, mail_ca)
    assert idle_socket(pool).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_concurrent_sends(smtp_server, mail_ca):
    """Eight callers at once: never more connections than sends under way."""
    server = smtp_server("STARTTLS")
    pool = SmtpPool(max_idle_per_key=8)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(5):
                send(pool, server, mail_ca, raw=raw_message(t * 100 + i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    received = server.wait_for_messages(40)
    assert sorted(m.content for m in received) == sorted(
        raw_message(t * 100 + i) for t in range(8) for i in range(5))
    stats = pool.stats()
    assert 1 <= stats["opened"] <= 8 and stats["opened"] + stats["reused"] == 40
    assert stats["idle"] == stats["opened"]
    pool.close()


def test_idle_list_is_bounded(smtp_server, mail_ca):
    """Four sends held in DATA at once need four connections; two are kept afterwards."""
    server = smtp_server("NONE")
    barrier = threading.Barrier(4, timeout=10)
    server.handler.deliver_to = lambda content, rcpts: barrier.wait()
    pool = SmtpPool(max_idle_per_key=2)
    threads = [threading.Thread(target=send, args=(pool, server, mail_ca), kwargs={"raw": raw_message(i)})
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    server.wait_for_messages(4)
    assert pool.stats() == {"opened": 4, "reused": 0, "replaced": 0, "idle": 2}
    pool.close()


def test_settings_mismatch_under_one_key_is_not_reused(smtp_servers, mail_ca, pool, mail_users):
    send(pool, smtp_servers["NONE"], mail_ca)
    send(pool, smtp_servers["TLS"], mail_ca)  # same key, another server: a connection of its own
    send(pool, smtp_servers["TLS"], mail_ca, user="support", password=mail_users["support"])
    assert pool.stats() == {"opened": 3, "reused": 0, "replaced": 0, "idle": 1}
    assert smtp_servers["TLS"].messages[-1].login == "support"


def test_utf8_addresses_and_8bit_body(smtp_server, mail_ca, pool):
    server = smtp_server("TLS")
    raw = raw_message(1, body="Grüße")
    send(pool, server, mail_ca, recipients=["jürgen@example.test"], raw=raw)
    send(pool, server, mail_ca, raw=raw)  # 8-bit body, ASCII addresses
    utf8, eight_bit = server.wait_for_messages(2)
    assert utf8.rcpt_tos == ["jürgen@example.test"] and utf8.content == raw
    assert utf8.mail_options == ["SMTPUTF8", "BODY=8BITMIME", f"SIZE={len(raw)}"]
    assert eight_bit.mail_options == ["BODY=8BITMIME", f"SIZE={len(raw)}"]


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def test_utf8_address_without_smtputf8_is_permanent(mail_ca, throttle):
    def authenticate(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.password == b"pw"
        return AuthResult(success=ok, handled=False)

    port = free_ports(1)[0]
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False, enable_SMTPUTF8=False)
    controller.start()
    pool = SmtpPool()
    try:
        server = SmtpServer.__new__(SmtpServer)  # just host, port, mode for send()
        server.host, server.port, server.mode = "127.0.0.1", port, "NONE"
        err = send_error(pool, server, mail_ca, user="u", password="pw",
                         recipients=["jürgen@example.test"], throttle=throttle)
        assert (err.code, err.transient, err.auth_failed) == (0, False, False)
        assert err.message == "the server does not support SMTPUTF8, needed for non-ASCII addresses"
        assert send(pool, server, mail_ca, user="u", password="pw", throttle=throttle).code == 250
    finally:
        pool.close()
        controller.stop()


# --------------------------------------------------------------------------------------
# the same transactions through smtplib: the pool's own client must behave as it does


def outcome(call) -> tuple:
    """What a send came to: the result, or the error as classified."""
    try:
        r = call()
    except SendError as e:
        return ("error", e.code, e.message, e.transient, e.auth_failed, e.error_code, e.refused)
    return ("sent", r.code, r.message, r.refused)


def what_the_server_got(server: SmtpServer) -> list[tuple]:
    """Accepted and refused messages: envelope, exact bytes, login, ESMTP parameters
    (keywords in one case: smtplib writes size=, the pool SIZE=; RFC 5321 2.4)."""
    def options(opts: list[str]) -> list[str]:
        return sorted(o.split("=", 1)[0].upper() + ("=" + o.split("=", 1)[1] if "=" in o else "") for o in opts)
    return [(kind, m.mail_from, m.rcpt_tos, m.content, m.login, options(m.mail_options), m.rcpt_options)
            for kind, received in (("accepted", server.messages), ("refused", server.handler.rejected))
            for m in received]


def through_both(server: SmtpServer, mail_ca, *, recipients=("rcpt@example.test",), raw: bytes,
                 fail: tuple[int, str] | None = None) -> dict[str, tuple]:
    """{"smtplib" | "pool": (outcome, what the server got)}, each on a fresh connection."""
    seen = {}
    for via in ("smtplib", "pool"):
        server.reset()
        server.fail_next = [fail] if fail else []
        if via == "smtplib":
            got = outcome(lambda: smtplib_send(
                server.host, server.port, server.mode, AGENT, "s3cret-agent", context=mail_ca.client_context(),
                mail_from=AGENT, recipients=list(recipients), raw=raw))
        else:
            pool = SmtpPool()
            try:
                got = outcome(lambda: send(pool, server, mail_ca, recipients=recipients, raw=raw))
            finally:
                pool.close()
        seen[via] = (got, what_the_server_got(server))
    return seen


TRANSACTIONS = {
    "dot-stuffing": dict(raw=raw_message(1)),
    "no line end at the end": dict(raw=b"Subject: x\r\n\r\nends without CRLF"),
    "8-bit body": dict(raw=raw_message(2, body="Grüße")),
    "UTF-8 header": dict(raw="Subject: Grüße\r\n\r\nx\r\n".encode()),
    "UTF-8 address": dict(recipients=("jürgen@example.test",), raw=raw_message(3, body="Grüße")),
    "several recipients": dict(recipients=("a@example.test", "b@example.test", "A@example.test"), raw=raw_message(7)),
    "larger than the socket buffers": dict(
        raw=raw_message(4, body="\r\n".join(f".line {i:07d} " + "x" * 60 for i in range(20_000)))),
    "data refused, temporarily": dict(raw=raw_message(5), fail=(451, "4.3.0 try later")),
    "data refused": dict(raw=raw_message(6), fail=(554, "5.6.0 Message content rejected")),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", TRANSACTIONS)
def test_the_pool_sends_as_smtplib_does(name, mode, smtp_server, mail_ca):
    seen = through_both(smtp_server(mode), mail_ca, **TRANSACTIONS[name])
    assert seen["pool"] == seen["smtplib"]
    assert seen["pool"][1], "the server saw the transaction"


def test_refused_recipients_are_told_as_smtplib_tells_them(refusing_rcpt, mail_ca):
    for recipients in (("nobody@example.test", "rcpt@example.test", "later@example.test"),
                       ("nobody@example.test", "nobody@other.test"),
                       ("nobody@example.test", "later@example.test")):
        seen = through_both(refusing_rcpt, mail_ca, recipients=recipients, raw=raw_message(1))
        assert seen["pool"] == seen["smtplib"], recipients


def test_a_server_that_hangs_up_after_the_data_is_told_as_smtplib_tells_it(smtp_server, mail_ca, monkeypatch):
    server = smtp_server("STARTTLS")
    real = server.handler.handle_DATA

    async def handle_DATA(srv, session, envelope):
        status = await real(srv, session, envelope)
        srv.transport.close()  # the message is taken, the 250 never arrives
        return status

    monkeypatch.setattr(server.handler, "handle_DATA", handle_DATA)
    seen = through_both(server, mail_ca, raw=raw_message(1))
    assert seen["pool"] == seen["smtplib"]
    assert seen["pool"][0][:2] == ("error", 0) and seen["pool"][0][5] is ErrorCode.PROTOCOL_ERROR


# --------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("reply, transient", [
    ((451, "4.3.0 try later"), True),
    ((550, "5.7.1 rejected"), False),
    ((421, "4.3.2 shutting down"), True),
    ((554, "5.6.0 Message content rejected"), False),
])
def test_refused_message(reply, transient, smtp_server, mail_ca, pool):
    server = smtp_server("STARTTLS")
    send(pool, server, mail_ca)
    server.fail_next = [reply]
    err = send_error(pool, server, mail_ca, raw=raw_message(2))
    assert (err.code, err.message, err.transient, err.auth_failed) == (*reply, transient, False)
    assert str(err) == f"{reply[0]} {reply[1]}"
    assert repr(pickle.loads(pickle.dumps(err))) == repr(err)  # crosses process pools intact
    assert err.error_code is ErrorCode.NONE
    # Refused after the body was sent: never sent again, and the connection is gone.
    assert len(server.handler.rejected) == 1 and len(server.messages) == 1
    assert pool.stats() == {"opened": 1, "reused": 1, "replaced": 0, "idle": 0}
    send(pool, server, mail_ca, raw=raw_message(3))
    assert pool.stats()["opened"] == 2


@pytest.fixture
def refusing_rcpt(smtp_server, monkeypatch):
    """The NONE server, refusing recipients by their local part: nobody 550, later 450."""
    server = smtp_server("NONE")

    async def handle_RCPT(srv, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local == "nobody":
            return "550 5.1.1 No such user"
        if local == "later":
            return "450 4.2.1 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    # aiosmtpd collects the handle_* hooks of the handler for each new connection.
    monkeypatch.setattr(server.handler, "handle_RCPT", handle_RCPT, raising=False)
    return server


def test_some_recipients_refused(refusing_rcpt, mail_ca, pool):
    result = send(pool, refusing_rcpt, mail_ca,
                  recipients=["nobody@example.test", "rcpt@example.test", "later@example.test"])
    assert result == SendResult(250, "2.0.0 OK", {
        "nobody@example.test": (550, "5.1.1 No such user"),
        "later@example.test": (450, "4.2.1 Mailbox busy")})
    assert refusing_rcpt.wait_for_messages(1)[0].rcpt_tos == ["rcpt@example.test"]
    assert pool.stats()["idle"] == 1  # a success: the connection goes back to the pool


def test_all_recipients_refused(refusing_rcpt, mail_ca, pool):
    err = send_error(pool, refusing_rcpt, mail_ca, recipients=["nobody@example.test", "nobody@other.test"])
    assert (err.code, err.message, err.transient) == (550, "5.1.1 No such user", False)
    assert err.refused == {"nobody@example.test": (550, "5.1.1 No such user"),
                           "nobody@other.test": (550, "5.1.1 No such user")}
    # One of them only temporarily: retrying may reach it, so the error is transient.
    err = send_error(pool, refusing_rcpt, mail_ca, recipients=["nobody@example.test", "later@example.test"])
    assert (err.code, err.message, err.transient) == (450, "4.2.1 Mailbox busy", True)
    assert refusing_rcpt.messages == [] and refusing_rcpt.handler.rejected == []  # no DATA
    assert pool.stats() == {"opened": 2, "reused": 0, "replaced": 0, "idle": 0}


def test_no_recipients_is_a_programming_error(smtp_server, mail_ca, pool):
    with pytest.raises(ValueError):
        send(pool, smtp_server("NONE"), mail_ca, recipients=[])


# --------------------------------------------------------------------------------------
# broken and expired connections


@pytest.mark.parametrize("mode", MODES)
def test_connection_closed_by_the_server_is_replaced(mode, own_server, mail_ca, pool):
    server = own_server(mode)
    send(pool, server, mail_ca, raw=raw_message(1))
    server.stop()  # closes the idle connection on the server side
    server.start()  # same port
    result = send(pool, server, mail_ca, raw=raw_message(2))
    assert result.code == 250
    assert [m.content for m in server.wait_for_messages(2)].count(raw_message(2)) == 1
    assert pool.stats() == {"opened": 2, "reused": 1, "replaced": 1, "idle": 1}


def test_421_at_mail_from_on_a_reused_connection_is_replaced(smtp_server, mail_ca, pool, monkeypatch):
    server = smtp_server("TLS")
    replies: list[str] = []
    calls = []

    async def handle_MAIL(srv, session, envelope, address, mail_options):
        calls.append(address)
        if replies:
            return replies.pop()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    # aiosmtpd collects the handle_* hooks for each new connection: set before the first.
    monkeypatch.setattr(server.handler, "handle_MAIL", handle_MAIL, raising=False)
    send(pool, server, mail_ca, raw=raw_message(1))
    replies.append("421 4.4.2 Idle too long, closing")  # what a server may say to a stale session
    send(pool, server, mail_ca, raw=raw_message(2))
    assert len(calls) == 3
    assert [m.content for m in server.wait_for_messages(2)] == [raw_message(1), raw_message(2)]
    assert pool.stats() == {"opened": 2, "reused": 1, "replaced": 1, "idle": 1}

    # On a fresh connection the 421 is the answer: no second try.
    pool.discard(KEY)
    replies.append("421 4.3.2 Service shutting down")
    err = send_error(pool, server, mail_ca, raw=raw_message(3))
    assert (err.code, err.message, err.transient) == (421, "4.3.2 Service shutting down", True)
    assert len(calls) == 4 and pool.stats()["opened"] == 3


def test_connection_lost_after_the_body_is_not_retried(smtp_server, mail_ca, pool, monkeypatch):
    """The server may have taken the message: sending it again could deliver it twice."""
    server = smtp_server("STARTTLS")
    real = server.handler.handle_DATA
    hang_up = []

    async def handle_DATA(srv, session, envelope):
        status = await real(srv, session, envelope)
        if hang_up:
            srv.transport.close()  # the message is taken, the 250 never arrives
        return status

    monkeypatch.setattr(server.handler, "handle_DATA", handle_DATA)
    send(pool, server, mail_ca, raw=raw_message(1))
    hang_up.append(True)
    err = send_error(pool, server, mail_ca, raw=raw_message(2))
    assert (err.code, err.transient, err.error_code) == (0, True, ErrorCode.PROTOCOL_ERROR)
    assert err.message == "server closed the connection"
    assert [m.content for m in server.messages] == [raw_message(1), raw_message(2)]
    assert pool.stats() == {"opened": 1, "reused": 1, "replaced": 0, "idle": 0}


def test_timeout_on_a_reused_connection_is_not_replaced(smtp_server, mail_ca, pool, monkeypatch):
    """A slow server is not a dropped connection; trying again would double the wait."""
    server = smtp_server("NONE")
    delay = []

    async def handle_MAIL(srv, session, envelope, address, mail_options):
        if delay:
            await asyncio.sleep(delay[0])
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    monkeypatch.setattr(server.handler, "handle_MAIL", handle_MAIL, raising=False)
    send(pool, server, mail_ca)
    delay.append(1.0)
    start = time.monotonic()
    err = send_error(pool, server, mail_ca, timeout=0.3)
    assert time.monotonic() - start < 0.8
    assert (err.code, err.message, err.transient, err.error_code) == (
        0, "timed out after 0.3 s", True, ErrorCode.TIMEOUT)
    assert pool.stats() == {"opened": 1, "reused": 1, "replaced": 0, "idle": 0}


def test_the_timeout_bounds_each_reply_not_the_whole_transaction(smtp_server, mail_ca, pool, monkeypatch):
    """Every reply comes after 0.2 s with a timeout of 0.5 s: the transaction takes
    longer than the timeout and still succeeds."""
    server = smtp_server("TLS")

    async def handle_RCPT(srv, session, envelope, address, rcpt_options):
        await asyncio.sleep(0.2)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    monkeypatch.setattr(server.handler, "handle_RCPT", handle_RCPT, raising=False)
    recipients = [f"rcpt{i}@example.test" for i in range(4)]
    start = time.monotonic()
    assert send(pool, server, mail_ca, recipients=recipients, timeout=0.5).code == 250
    assert time.monotonic() - start > 0.8  # four slow replies, each within the timeout
    assert server.wait_for_messages(1)[0].rcpt_tos == recipients


def test_idle_connections_expire(smtp_server, mail_ca, monkeypatch):
    server = smtp_server("STARTTLS")
    quits = []

    async def handle_QUIT(srv, session, envelope):
        quits.append(session.peer)
        return "221 Bye"

    monkeypatch.setattr(server.handler, "handle_QUIT", handle_QUIT, raising=False)
    clock = FakeClock()
    pool = SmtpPool(idle_timeout=60, clock=clock)
    send(pool, server, mail_ca)
    clock.now += 59
    send(pool, server, mail_ca)
    assert pool.stats()["reused"] == 1
    sock = idle_socket(pool)
    clock.now += 61
    send(pool, server, mail_ca)
    assert pool.stats() == {"opened": 2, "reused": 1, "replaced": 0, "idle": 1}
    assert sock.fileno() == -1 and len(quits) == 1  # closed with QUIT, not reused
    pool.close()


# --------------------------------------------------------------------------------------
# connection and login failures


@pytest.mark.parametrize("mode", MODES)
def test_wrong_password(mode, smtp_server, mail_ca, pool, throttle):
    server = smtp_server(mode)
    err = send_error(pool, server, mail_ca, password="wrong", throttle=throttle)
    assert (err.code, err.message) == (535, "5.7.8 Authentication credentials invalid")
    assert (err.transient, err.auth_failed, err.error_code) == (True, True, ErrorCode.AUTH_FAILED)
    # The throttle keeps the wrong password away from the server for a while.
    err = send_error(pool, server, mail_ca, password="wrong", throttle=throttle)
    assert (err.code, err.transient, err.auth_failed, err.error_code) == (0, True, False, ErrorCode.BACKOFF)
    assert err.retry_after == pytest.approx(5)
    assert send(pool, server, mail_ca, throttle=throttle).code == 250
    assert pool.stats() == {"opened": 1, "reused": 0, "replaced": 0, "idle": 1}


def test_closed_port(closed_port, mail_ca, pool, throttle):
    ep = Endpoint(closed_port.host, closed_port.port, "STARTTLS")
    with pytest.raises(SendError) as info:
        pool_send(pool, KEY, ep, PasswordAuth(AGENT, "x"), timeout=5, ca_pem=None, mail_from=AGENT,
                  recipients=["rcpt@example.test"], raw=raw_message(), throttle=throttle)
    err = info.value
    assert (err.code, err.message, err.transient, err.auth_failed) == (0, "connection refused", True, False)
    assert err.error_code is ErrorCode.CONNECT_FAILED


@pytest.mark.parametrize("mode", MODES)
def test_silent_server_times_out(mode, silent_listener, pool, throttle):
    ep = Endpoint(silent_listener.host, silent_listener.port, mode)
    start = time.monotonic()
    with pytest.raises(SendError) as info:
        pool_send(pool, KEY, ep, PasswordAuth(AGENT, "x"), timeout=0.5, ca_pem=None, mail_from=AGENT,
                  recipients=["rcpt@example.test"], raw=raw_message(), throttle=throttle)
    assert time.monotonic() - start < 1.5
    err = info.value
    assert (err.code, err.transient, err.auth_failed, err.error_code) == (0, True, False, ErrorCode.TIMEOUT)
    assert err.message.startswith("timed out after 0.5 s")


def test_untrusted_certificate(smtp_server, other_ca, pool, throttle):
    err = send_error(pool, smtp_server("TLS"), other_ca, throttle=throttle)
    assert (err.code, err.transient, err.auth_failed, err.error_code) == (0, True, False, ErrorCode.TLS_FAILED)
    assert err.message.startswith("certificate verify failed")


# --------------------------------------------------------------------------------------
# discard and close


def test_discard_closes_the_key_s_connections(smtp_servers, mail_ca, pool):
    send(pool, smtp_servers["NONE"], mail_ca, key="a")
    send(pool, smtp_servers["TLS"], mail_ca, key="b")
    a, b = idle_socket(pool, "a"), idle_socket(pool, "b")
    pool.discard("a")
    assert a.fileno() == -1 and b.fileno() != -1
    assert pool.stats()["idle"] == 1
    send(pool, smtp_servers["NONE"], mail_ca, key="a")
    assert pool.stats()["opened"] == 3


def test_discard_during_a_send_closes_that_connection_afterwards(smtp_server, mail_ca, pool):
    server = smtp_server("NONE")
    server.handler.deliver_to = lambda content, rcpts: pool.discard(KEY)  # settings changed meanwhile
    assert send(pool, server, mail_ca).code == 250
    assert pool.stats()["idle"] == 0


def test_close_closes_everything(smtp_servers, mail_ca):
    pool = SmtpPool()
    for mode in MODES:
        send(pool, smtp_servers[mode], mail_ca, key=mode)
    socks = [idle_socket(pool, mode) for mode in MODES]
    pool.close()
    assert [s.fileno() for s in socks] == [-1, -1, -1]
    assert pool.stats()["idle"] == 0
    send(pool, smtp_servers["NONE"], mail_ca)  # still sends, but keeps nothing
    assert pool.stats()["idle"] == 0


# --------------------------------------------------------------------------------------
# no secret in logs or errors


def test_no_password_in_logs_or_errors(caplog, smtp_servers, mail_ca, mail_users, throttle):
    secrets = [mail_users[AGENT], "wrong-pässwort"]
    forms = set(secrets)
    for pw in secrets:
        forms.add(base64.b64encode(f"\0{AGENT}\0{pw}".encode()).decode())
        forms.add(base64.b64encode(pw.encode()).decode())
    caplog.set_level(logging.DEBUG)
    pool = SmtpPool()
    errors: list[SendError] = []
    for mode in MODES:
        server = smtp_servers[mode]
        send(pool, server, mail_ca, key=mode, throttle=throttle)
        server.fail_next = [(451, "4.3.0 try later")]
        for password in (mail_users[AGENT], "wrong-pässwort", "wrong-pässwort"):
            try:
                send(pool, server, mail_ca, key=mode, password=password, throttle=throttle)
            except SendError as e:
                errors.append(e)
    pool.close()
    assert {e.error_code for e in errors} == {ErrorCode.NONE, ErrorCode.AUTH_FAILED, ErrorCode.BACKOFF}
    assert any(r.name == "mailgate.transport" for r in caplog.records)
    texts = [r.getMessage() for r in caplog.records]
    texts += [f"{e!r} {e} {e.message} {e.args!r} {e.__cause__!r}" for e in errors]
    for text in texts:
        for form in forms:
            assert form not in text, f"secret in: {text}"
