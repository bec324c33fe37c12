"""Hostile mail servers cannot exhaust memory or time.

Fake SMTP, IMAP and POP3 servers on 127.0.0.1 speak the real wire protocol up to the
point where they turn hostile: an endless multi-line reply, one endless line, a
literal of 600 MB in a greeting, a message larger than the size they announced, an
endless listing, a goodbye dripped forever. Each test checks the clear error the
client gives and, measured in the fake server, that the client hung up long before
taking what was offered: the bytes the server got out (kernel buffers included) are
a small fraction of the offer, so the client never held them.
"""
from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time

import pytest

from mailgate.drivers.api import CheckResult, ErrorCode, Outcome
from mailgate.drivers.transport import (
    Endpoint, LoginThrottle, PasswordAuth, SendError, SmtpPool, TransportError, WatchHub, connect_imap,
    connect_smtp, probe)
from mailgate.drivers.transport.pop3_poll import Pop3Poller, Pop3Spec
from mailgate.drivers.transport.reconnect import Reconnect
from mailgate.drivers.transport.watch import MailboxSpec

MB = 1 << 20
OFFER = 128 * MB  # what a flooding server offers
BUFFERS = 12 * MB  # what the kernel takes in for the client (both sockets' buffers), generously
AUTH = PasswordAuth("agent@example.test", "s3cret")


class Hostile:
    """A fake server: each connection runs `script(peer)` in a thread of its own."""

    def __init__(self, script) -> None:
        self.script = script
        self.floods: list[int] = []  # bytes each flood got out before the client hung up
        self.hung_up: list[bool] = []  # per flood or drip: the client hung up (not the offer ran out)
        self.commands: list[str] = []
        self.ended = threading.Condition()  # notified when a flood or a drip ended
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port, "NONE")

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                self.script(Peer(self, conn, lines))
            except OSError:
                pass

    def wait(self, count: int = 1) -> None:
        """Until `count` floods or drips have ended."""
        with self.ended:
            assert self.ended.wait_for(lambda: len(self.hung_up) >= count, timeout=5), self.hung_up

    def _ended(self, hung_up: bool, sent: int | None = None) -> None:
        with self.ended:
            if sent is not None:
                self.floods.append(sent)
            self.hung_up.append(hung_up)
            self.ended.notify_all()

    def close(self) -> None:
        self._listener.close()


class Peer:
    def __init__(self, server: Hostile, conn: socket.socket, lines) -> None:
        self.server, self.conn, self.lines = server, conn, lines

    def send(self, text: str) -> None:
        self.conn.sendall(text.replace("\n", "\r\n").encode())

    def line(self) -> str | None:
        """The client's next line (None when it hung up), recorded."""
        raw = self.lines.readline()
        if not raw:
            return None
        line = raw.decode().rstrip("\r\n")
        self.server.commands.append(line)
        return line

    def flood(self, chunk: bytes, offer: int = OFFER) -> None:
        """Sends `chunk` again and again, `offer` bytes in all or until the client hangs up."""
        chunk *= max(1, 65536 // len(chunk))
        sent, hung_up = 0, False
        try:
            while sent < offer:
                self.conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            hung_up = True
        self.server._ended(hung_up, sent)

    def drip(self, line: str, every: float = 0.05, longest: float = 5.0) -> None:
        """Sends `line` every `every` seconds, for `longest` seconds or until the client hangs up."""
        end, hung_up = time.monotonic() + longest, False
        try:
            while time.monotonic() < end:
                self.send(line + "\n")
                time.sleep(every)
        except OSError:
            hung_up = True
        self.server._ended(hung_up)


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def make(script) -> Hostile:
        servers.append(Hostile(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def refused(server: Hostile, limit: int = 0) -> None:
    """The client hung up on the flood well before taking what was offered: no more
    than the `limit` it may read, and what the sockets' buffers hold."""
    server.wait()
    assert server.floods and all(server.hung_up), (server.floods, server.hung_up)
    assert max(server.floods) < limit + BUFFERS, server.floods


def fails(connect, server: Hostile, step: str, **kwargs) -> TransportError:
    trace: list[CheckResult] = []
    with pytest.raises(TransportError) as info:
        connect(server.endpoint(), AUTH, timeout=5, throttle=LoginThrottle(), trace=trace, **kwargs)
    err = info.value
    assert (err.step, err.code) == (step, ErrorCode.PROTOCOL_ERROR), repr(err)
    assert [c.outcome for c in trace if c.failed] == [Outcome.FAILED]
    return err


# --------------------------------------------------------------------------------------
# SMTP


def smtp_script(on_ehlo=None, on_mail=None, on_quit=None):
    """An SMTP server offering AUTH PLAIN; `on_<verb>(peer)` replaces its answer."""
    def script(peer: Peer) -> None:
        peer.send("220 hostile.example.test ESMTP\n")
        while (line := peer.line()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO" and on_ehlo:
                return on_ehlo(peer)
            if verb == "MAIL" and on_mail:
                return on_mail(peer)
            if verb == "QUIT" and on_quit:
                return on_quit(peer)
            peer.send({"EHLO": "250-hostile.example.test\n250 AUTH PLAIN\n", "AUTH": "235 2.7.0 ok\n",
                       "QUIT": "221 bye\n"}.get(verb, "250 ok\n"))
            if verb == "QUIT":
                return
    return script


@pytest.mark.parametrize("line, reason", [
    (b"250-hostile\r\n", "the server's reply exceeded 100 lines"),
    (b"250-" + b"x" * 996 + b"\r\n", "the server's reply exceeded 64 KB"),
])
def test_an_endless_multiline_smtp_reply_is_refused(hostile, line, reason):
    server = hostile(smtp_script(on_ehlo=lambda peer: peer.flood(line)))
    assert fails(connect_smtp, server, "auth").message == reason
    refused(server)


def test_an_endless_smtp_line_is_refused(hostile):
    server = hostile(lambda peer: (peer.send("220 "), peer.flood(b"x")))
    assert fails(connect_smtp, server, "connect").message == "the server's reply exceeded 8 KB in one line"
    refused(server)


def test_the_smtp_pool_refuses_an_endless_reply_to_a_command(hostile):
    server = hostile(smtp_script(on_mail=lambda peer: peer.flood(b"250-" + b"x" * 996 + b"\r\n")))

    async def send() -> None:
        pool = SmtpPool()
        try:
            await pool.send("k", server.endpoint(), AUTH, timeout=5, ca_pem=None, throttle=LoginThrottle(),
                            mail_from="agent@example.test", recipients=["c@example.test"],
                            raw=b"Subject: hi\r\n\r\nhello\r\n")
        finally:
            pool.close()

    with pytest.raises(SendError) as info:
        asyncio.run(send())
    assert (info.value.error_code, info.value.message) == (ErrorCode.PROTOCOL_ERROR,
                                                           "the server's reply exceeded 64 KB")
    assert info.value.transient  # the server may mend its ways: the message waits
    refused(server)


def test_a_goodbye_dripped_forever_does_not_hold_a_validation(hostile):
    server = hostile(smtp_script(on_quit=lambda peer: peer.drip("221-still leaving")))
    done: list[list[CheckResult]] = []
    worker = threading.Thread(target=lambda: done.append(
        probe("smtp", server.endpoint(), AUTH, timeout=0.3, throttle=LoginThrottle())), daemon=True)
    worker.start()
    worker.join(4)  # the drip would go on for 5 s
    assert done and [c.outcome for c in done[0]] == [Outcome.PASSED, Outcome.SKIPPED, Outcome.PASSED]
    server.wait()
    assert server.hung_up == [True]


# --------------------------------------------------------------------------------------
# IMAP


def imap_script(greeting: str = "* OK hostile IMAP ready\n", capability=None, sizes: str = "",
                bodies=None):
    """An IMAP server without IDLE; `capability(peer, tag)` and `bodies(peer, tag, command)`
    replace its answers to CAPABILITY and to UID FETCH ... BODY.PEEK[]."""
    def script(peer: Peer) -> None:
        peer.send(greeting)
        while (line := peer.line()) is not None:
            tag, _, command = line.partition(" ")
            verb = command.upper()
            if verb.startswith("CAPABILITY"):
                if capability:
                    return capability(peer, tag)
                peer.send(f"* CAPABILITY IMAP4rev1\n{tag} OK done\n")
            elif verb.startswith("LOGIN"):
                peer.send(f"{tag} OK logged in\n")
            elif verb.startswith("EXAMINE"):
                peer.send(f"* FLAGS (\\Seen)\n* 2 EXISTS\n* 0 RECENT\n* OK [UIDVALIDITY 7] ok\n"
                          f"{tag} OK [READ-ONLY] examined\n")
            elif verb.startswith("UID FETCH") and "RFC822.SIZE" in verb:
                peer.send(f"{sizes}{tag} OK done\n")
            elif verb.startswith("UID FETCH") and bodies:
                bodies(peer, tag, command)
            elif verb.startswith("LOGOUT"):
                return peer.send(f"* BYE\n{tag} OK bye\n")
            else:
                peer.send(f"{tag} OK\n")
    return script


def test_an_imap_greeting_announcing_a_600_mb_literal_is_refused_before_it_is_read(hostile):
    server = hostile(lambda peer: (peer.send("* OK {600000000}\n"), peer.flood(b"x")))
    err = fails(connect_imap, server, "connect")
    assert err.message == "the server announced a literal of 600,000,000 bytes; the limit outside a message is 64 KB"
    refused(server)


def test_an_imap_capability_literal_is_refused(hostile):
    server = hostile(imap_script(capability=lambda peer, tag: (
        peer.send("* CAPABILITY {600000000}\n"), peer.flood(b"IMAP4rev1 "))))
    err = fails(connect_imap, server, "connect")
    assert err.message == "the server announced a literal of 600,000,000 bytes; the limit outside a message is 64 KB"
    refused(server)


def test_endless_untagged_imap_responses_are_refused(hostile):
    server = hostile(imap_script(capability=lambda peer, tag: peer.flood(b"* OK " + b"x" * 995 + b"\r\n")))
    assert fails(connect_imap, server, "connect").message == "the server's response exceeded 1 MB"
    refused(server)


class Sink:
    """The watchers' sink: every mailbox new, what is delivered and reported kept."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, bytes]] = []
        self.problems: queue.Queue[CheckResult | None] = queue.Queue()
        self.reported: list[CheckResult | None] = []

    def position(self, key):
        return None, 0

    def numbers(self, key, uidls):
        return {uidl: i + 1 for i, uidl in enumerate(uidls)}

    def deliver(self, key, uidvalidity, messages):
        self.delivered += messages

    def status(self, key, problem):
        self.reported.append(problem)
        self.problems.put(problem)

    def reconnecting(self, key, problem):
        pass

    def down(self) -> CheckResult | None:
        return next((p for p in self.reported if p is not None), None)


def watched(server: Hostile, timeout: float = 5, **kwargs) -> Sink:
    """Watches the server's INBOX until it is reported down or a message is delivered."""
    sink = Sink()
    hub = WatchHub(sink, throttle=LoginThrottle(), reconnect=Reconnect(base=5), **kwargs)
    try:
        hub.watch(MailboxSpec("box", server.endpoint(), AUTH, timeout=timeout))
        deadline = time.monotonic() + 5
        while not sink.delivered and not sink.down() and time.monotonic() < deadline:
            time.sleep(0.01)
        return sink
    finally:
        hub.close()


def test_a_fetch_literal_larger_than_the_announced_size_is_refused(hostile):
    def bodies(peer, tag, command):
        peer.send("* 1 FETCH (UID 1 BODY[] {200000000}\n")
        peer.flood(b"x" * 998 + b"\r\n")
    server = hostile(imap_script(sizes="* 1 FETCH (UID 1 RFC822.SIZE 100)\n", bodies=bodies))
    sink = watched(server)
    problem = sink.down()
    assert problem is not None and problem.error_code is ErrorCode.PROTOCOL_ERROR
    assert problem.server_message == ("a FETCH literal of 200,000,000 bytes exceeds what the server announced "
                                      "for the message (at most 65,648 bytes)")
    assert sink.delivered == []
    refused(server)


def test_a_message_announced_over_the_limit_is_not_downloaded(hostile):
    body = "Subject: small\r\n\r\nhello\r\n"

    def bodies(peer, tag, command):
        assert command == "UID FETCH 2 (BODY.PEEK[])"
        peer.send(f"* 2 FETCH (UID 2 BODY[] {{{len(body)}}}\n")
        peer.conn.sendall(body.encode())
        peer.send(f")\n{tag} OK done\n")
    server = hostile(imap_script(sizes=f"* 1 FETCH (UID 1 RFC822.SIZE 600000000)\n"
                                       f"* 2 FETCH (UID 2 RFC822.SIZE {len(body)})\n", bodies=bodies))
    sink = watched(server, max_message_bytes=1 * MB)
    assert sink.down() is None
    assert sink.delivered == [(2, body.encode())]
    assert [c for c in server.commands if "BODY" in c] == [server.commands[-1]]  # only UID 2's


# --------------------------------------------------------------------------------------
# POP3


def pop3_script(uidl=None, listing: str = "1 100\n", retr=None):
    """A POP3 server with one message; `uidl(peer)` and `retr(peer)` replace its answers."""
    def script(peer: Peer) -> None:
        peer.send("+OK hostile POP3 ready\n")
        while (line := peer.line()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "UIDL" and uidl:
                return uidl(peer)
            if verb == "RETR" and retr:
                return retr(peer)
            peer.send({"UIDL": "+OK\n1 first\n.\n", "LIST": f"+OK\n{listing}.\n",
                       "RETR": "+OK\nSubject: hi\n\nhello\n.\n", "CAPA": "-ERR no\n"}.get(verb, "+OK\n"))
            if verb == "QUIT":
                return
    return script


def polled(server: Hostile, *, timeout: float = 5) -> tuple[Sink, CheckResult | None]:
    """Polls the server until the first status (a failure is reported when the next
    poll fails too: twice); (sink, that status)."""
    sink = Sink()
    poller = Pop3Poller(sink, throttle=LoginThrottle(), reconnect=Reconnect(base=0.01, cap=0.02))
    try:
        poller.watch(Pop3Spec("box", server.endpoint(), AUTH, timeout=timeout))
        return sink, sink.problems.get(timeout=5)
    finally:
        poller.close()


def test_an_endless_pop3_uidl_listing_is_refused(hostile):
    server = hostile(pop3_script(uidl=lambda peer: (peer.send("+OK\n"), peer.flood(b"1 " + b"u" * 60 + b"\r\n"))))
    sink, problem = polled(server)
    assert problem is not None and problem.error_code is ErrorCode.PROTOCOL_ERROR
    assert problem.server_message == "the server's list of messages exceeded 250,000 lines"
    refused(server, 16 * MB)


def test_an_endless_pop3_retr_is_refused_past_the_size_listed(hostile):
    server = hostile(pop3_script(retr=lambda peer: (peer.send("+OK\n"), peer.flood(b"x" * 78 + b"\r\n"))))
    sink, problem = polled(server)
    assert problem is not None and problem.error_code is ErrorCode.PROTOCOL_ERROR
    assert problem.server_message == ("message 1 exceeded 65,648 bytes (the size the server announced for it, "
                                      "or the limit)")
    assert sink.delivered == []
    refused(server)


def test_a_pop3_message_listed_over_the_limit_is_not_downloaded(hostile):
    server = hostile(pop3_script(listing="1 600000000\n", retr=lambda peer: peer.flood(b"x" * 78 + b"\r\n")))
    sink, problem = polled(server)
    assert problem is None and sink.delivered == []
    assert not any(c.startswith("RETR") for c in server.commands) and server.floods == []


def test_a_dripped_pop3_listing_hits_an_overall_deadline(hostile):
    server = hostile(pop3_script(uidl=lambda peer: (peer.send("+OK\n"), peer.drip("1 first"))))
    sink, problem = polled(server, timeout=0.2)
    assert problem is not None and problem.error_code is ErrorCode.TIMEOUT
    assert problem.server_message == "no complete answer within 0.6 s (overall limit)"
    server.wait(2)
    assert server.hung_up[:2] == [True, True]


def test_a_report_shows_only_a_short_clean_excerpt_of_what_a_server_said(hostile):
    """A greeting of 7 KB with terminal escapes and control characters: the report
    names the refusal in a few printable words, not the server's whole banner."""
    def refuse(peer: Peer) -> None:
        peer.conn.sendall(b"554 \x1b[2J\x1b[31mgo away\x07 " + b"\x00\x08junk " * 1000 + b"\r\n")
        peer.line()
    server = hostile(refuse)
    trace: list[CheckResult] = []
    with pytest.raises(TransportError):
        connect_smtp(server.endpoint(), AUTH, timeout=5, trace=trace, throttle=LoginThrottle())
    [failed] = [c for c in trace if c.outcome is Outcome.FAILED]
    assert "go away" in failed.server_message and len(failed.server_message) <= 300
    assert all(c.isprintable() for c in failed.server_message)


# --------------------------------------------------------------------------------------
# Deadlines follow what arrives, not what a server announces


def test_an_imap_message_announced_large_and_then_dripped_is_cut_off_by_what_arrived(hostile):
    """40 MB announced, then a byte every 50 ms: every read is answered within the socket
    timeout, but the deadline grows only with the bytes that came (a deadline grown with
    the size announced would give this server 800 s)."""
    announced = 40_000_000

    def bodies(peer, tag, command):
        peer.send(f"* 1 FETCH (UID 1 BODY[] {{{announced}}}\n")
        peer.drip("x", every=0.05, longest=20)
    server = hostile(imap_script(sizes=f"* 1 FETCH (UID 1 RFC822.SIZE {announced})\n", bodies=bodies))
    sink = watched(server, timeout=0.3)
    problem = sink.down()
    assert problem is not None and problem.error_code is ErrorCode.TIMEOUT
    assert problem.server_message.startswith("no complete answer within 0.9") and \
        problem.server_message.endswith(" s (overall limit)")
    assert sink.delivered == []
    server.wait()
    assert server.hung_up == [True]


def test_a_pop3_message_listed_large_and_then_dripped_is_cut_off_by_what_arrived(hostile):
    server = hostile(pop3_script(listing="1 40000000\n",
                                 retr=lambda peer: (peer.send("+OK\n"), peer.drip("x", longest=20))))
    sink, problem = polled(server, timeout=0.2)
    assert problem is not None and problem.error_code is ErrorCode.TIMEOUT
    assert problem.server_message.startswith("no complete answer within 0.6")
    assert sink.delivered == []
    server.wait(2)
    assert server.hung_up[:2] == [True, True]


def test_a_slow_but_steady_transfer_outlasts_the_first_deadline(hostile):
    """320 KB at 160 KB/s take 2 s, past the 0.9 s a command gets: the bytes that
    arrive keep the transfer going."""
    body = b"Subject: slow\r\n\r\n" + b"y" * (320 * 1024 - 19) + b"\r\n"

    def bodies(peer, tag, command):
        peer.send(f"* 1 FETCH (UID 1 BODY[] {{{len(body)}}}\n")
        for i in range(0, len(body), 16 * 1024):
            peer.conn.sendall(body[i:i + 16 * 1024])
            time.sleep(0.1)
        peer.send(f")\n{tag} OK done\n")
    server = hostile(imap_script(sizes=f"* 1 FETCH (UID 1 RFC822.SIZE {len(body)})\n", bodies=bodies))
    sink = watched(server, timeout=0.3)
    assert sink.down() is None
    assert sink.delivered == [(1, body)]
