"""WatchHub (drivers/transport/watch.py) against the real test Dovecot.

Latencies are printed (run with -s to see them). Dovecot itself announces new mail
about 0.5 s after delivery (IDLE), so "fast" here means well under 2 s.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import pytest
from imapclient import IMAPClient

from mailgate.drivers.api import CheckResult, ErrorCode, Outcome
from mailgate.drivers.transport import (
    Endpoint, LoginThrottle, MailboxSpec, PasswordAuth, WatchHub,
)
from mailgate.drivers.transport.pop3_poll import Pop3Poller
from mailgate.drivers.transport.reconnect import Reconnect
from mailgate.testing.servers import Dovecot

AGENT = "agent@example.test"
SUPPORT = "support"
RETURN_PATH = b"Return-Path: <sender@example.test>\r\n"  # what Dovecot's LMTP prepends


# --------------------------------------------------------------------------------------
# helpers


class Sink:
    """A MailboxSink in memory that checks the contract as it goes."""

    def __init__(self, fail_deliveries: int = 0) -> None:
        self.cv = threading.Condition()
        self.positions: dict[str, tuple[int | None, int]] = {}
        self.messages: list[tuple[str, int, int, bytes, float]] = []  # key, validity, uid, raw, when
        self.statuses: list[tuple[str, CheckResult | None]] = []  # key, problem
        self.reconnects: list[tuple[str, CheckResult]] = []  # key, problem
        self.deliver_calls = 0
        self.fail_deliveries = fail_deliveries

    def position(self, key):
        with self.cv:
            return self.positions.get(key, (None, 0))

    def deliver(self, key, uidvalidity, messages):
        assert messages and [u for u, _ in messages] == sorted(u for u, _ in messages)
        with self.cv:
            self.deliver_calls += 1
            if self.fail_deliveries:
                self.fail_deliveries -= 1
                raise RuntimeError("the queue is unavailable (test)")
            now = time.monotonic()
            for uid, raw in messages:
                assert isinstance(raw, bytes)
                self.messages.append((key, uidvalidity, uid, raw, now))
            validity, last = self.positions.get(key, (None, 0))
            top = max(u for u, _ in messages)
            self.positions[key] = (uidvalidity, top if validity != uidvalidity else max(last, top))
            self.cv.notify_all()

    def status(self, key, problem):
        assert problem is None or problem.outcome is Outcome.FAILED
        with self.cv:
            self.statuses.append((key, problem))
            self.cv.notify_all()

    def reconnecting(self, key, problem):
        assert problem.outcome is Outcome.FAILED
        with self.cv:
            self.reconnects.append((key, problem))

    def wait(self, predicate, timeout: float = 5.0) -> bool:
        with self.cv:
            return self.cv.wait_for(predicate, timeout)

    def wait_message(self, key, raw_part: bytes, timeout: float = 5.0):
        """The delivered (validity, uid, raw, when) whose bytes contain raw_part."""
        found = []

        def seen():
            found[:] = [m for m in self.messages if m[0] == key and raw_part in m[3]]
            return bool(found)

        assert self.wait(seen, timeout), f"{raw_part!r} not delivered within {timeout} s"
        return found[0][1:]

    def uids(self, key, validity=None) -> list[int]:
        with self.cv:
            return [m[2] for m in self.messages if m[0] == key and validity in (None, m[1])]

    def states(self, key) -> list[bool]:
        with self.cv:
            return [s[1] is None for s in self.statuses if s[0] == key]


def message(subject: str) -> bytes:
    return (f"From: Customer <customer@example.test>\r\nTo: {AGENT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4()}@example.test>\r\n\r\nHello, {subject}.\r\n").encode()


PORTS = {"TLS": "imaps_port", "STARTTLS": "imap_port", "NONE": "imap_port"}


def spec_for(server: Dovecot, user: str, password: str, *, ca, security: str = "TLS", key: str | None = None,
             **kwargs) -> MailboxSpec:
    return MailboxSpec(key or user, Endpoint(server.host, getattr(server, PORTS[security]), security),
                       PasswordAuth(user, password), ca_pem=ca.ca_pem, **kwargs)


def imap(server: Dovecot, user: str, password: str) -> IMAPClient:
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=10)
    client.login(user, password)
    return client


def wait_until(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def connections_to(port: int) -> int:
    """TCP connections of this process to `port` (from /proc: fd inodes x /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


def auth_failures(server: Dovecot) -> int:
    try:
        return server.log_path.read_text(errors="replace").count("auth failed")
    except FileNotFoundError:
        return 0


def hub_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mailgate-watch-")]


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def make_hub():
    hubs: list[WatchHub] = []

    def make(sink, **kwargs) -> WatchHub:
        kwargs.setdefault("throttle", LoginThrottle())  # never the process-wide one
        kwargs.setdefault("reconnect", Reconnect(base=0.1))
        hub = WatchHub(sink, **kwargs)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


class StallingProxy:
    """A TCP proxy in front of a server; stall() makes the connections open now stop
    forwarding the server's bytes after `after` more bytes (new ones flow normally)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.states: list[dict] = []
        self.sockets: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"budget": None, "done": threading.Event()}
            self.states.append(state)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None, state), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, state), daemon=True).start()

    def _pump(self, src, dst, limited, state) -> None:
        try:
            while not state["done"].is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limited is not None and limited["budget"] is not None:
                    allowed = data[:max(limited["budget"], 0)]
                    limited["budget"] -= len(allowed)
                    dst.sendall(allowed)
                    if len(allowed) < len(data):
                        state["done"].wait()  # stalled: hold the rest until the client gives up
                        break
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            state["done"].set()
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self, after: int) -> None:
        for state in self.states:
            state["budget"] = after

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for state in self.states:
            state["done"].set()
        for sock in self.sockets:
            sock.close()


# --------------------------------------------------------------------------------------
# tests


def test_new_mail_arrives_over_idle_within_milliseconds_of_dovecot(clean_dovecot, mail_ca, mail_users, make_hub):
    sink = Sink()
    hub = make_hub(sink)
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    assert sink.statuses == [(AGENT, None)]
    with imap(clean_dovecot, AGENT, mail_users[AGENT]) as client:
        validity = client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]

    latencies = []
    for n in (1, 2, 3):  # one right after the other: the watcher is listening again at once
        raw = message(f"idle {n}")
        start = time.monotonic()
        clean_dovecot.deliver(AGENT, raw)
        got_validity, uid, got, when = sink.wait_message(AGENT, raw, timeout=3)
        latencies.append(when - start)
        assert got == RETURN_PATH + raw  # exact bytes
        assert got_validity == validity
    print(f"\nIDLE delivery latencies (Dovecot announces after ~0.5 s): "
          f"{', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < 2.0
    uids = sink.uids(AGENT)
    assert len(uids) == 3 and uids == list(range(uids[0], uids[0] + 3))
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    stats = hub.stats()
    assert stats["delivered"] == 3 and stats["reconnects"] == 0


def test_a_burst_arrives_complete_in_order_and_once(clean_dovecot, mail_ca, mail_users, make_hub):
    sink = Sink()
    hub = make_hub(sink, max_batch=7)  # several deliver() calls per wake-up
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    raws = [message(f"burst {n}") for n in range(40)]
    start = time.monotonic()
    for raw in raws:  # mail keeps arriving while the watcher fetches
        clean_dovecot.deliver(AGENT, raw)
    delivered = time.monotonic() - start
    assert sink.wait(lambda: len(sink.messages) == len(raws), timeout=5)
    took = max(m[4] for m in sink.messages) - start
    print(f"\n40 messages over LMTP in {delivered:.2f} s, all committed {took:.2f} s after the first")
    uids = sink.uids(AGENT)
    assert uids == sorted(set(uids)) and [m[3] for m in sink.messages] == [RETURN_PATH + r for r in raws]
    assert took < delivered + 2.0
    assert sink.wait(lambda: sink.deliver_calls >= 6)
    assert hub.stats()["reconnects"] == 0


def test_expunges_by_someone_else_are_no_new_mail(clean_dovecot, mail_ca, mail_users, make_hub):
    password = mail_users[AGENT]
    for n in range(3):
        clean_dovecot.append(AGENT, message(f"to expunge {n}"))
    sink = Sink()
    hub = make_hub(sink)
    hub.watch(spec_for(clean_dovecot, AGENT, password, ca=mail_ca))
    assert sink.wait(lambda: len(sink.messages) == 3)
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    with imap(clean_dovecot, AGENT, password) as client:  # an agent deletes two in their mail app
        client.select_folder("INBOX")
        client.delete_messages(sink.uids(AGENT)[:2])
        client.expunge()
    time.sleep(1.2)  # Dovecot tells the watcher (EXPUNGE) within ~1 s
    raw = message("after the expunge")
    start = time.monotonic()
    clean_dovecot.deliver(AGENT, raw)  # the count is back where it was: still new mail
    _, _, _, when = sink.wait_message(AGENT, raw, timeout=3)
    assert when - start < 2.0
    assert len(sink.messages) == 4 and hub.stats()["reconnects"] == 0


def test_catch_up_from_the_stored_position_never_by_seen_and_leaves_flags_alone(
        clean_dovecot, mail_ca, mail_users, make_hub):
    password = mail_users[AGENT]
    raws = [message(f"backlog {n}") for n in range(3)]
    uids = [clean_dovecot.append(AGENT, raws[0]),
            clean_dovecot.append(AGENT, raws[1], flags=(b"\\Seen",)),  # read by a person already
            clean_dovecot.append(AGENT, raws[2])]
    with imap(clean_dovecot, AGENT, password) as client:
        validity = client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    sink = Sink()
    sink.positions[AGENT] = (validity, uids[0])  # the first one was committed before
    hub = make_hub(sink)
    spec = spec_for(clean_dovecot, AGENT, password, ca=mail_ca, security="STARTTLS")
    hub.watch(spec)
    assert sink.wait(lambda: len(sink.messages) == 2)
    assert [(m[1], m[2], m[3]) for m in sink.messages] == [(validity, uids[1], raws[1]),
                                                           (validity, uids[2], raws[2])]

    # Not watching: mail arrives; watching again catches up from the stored position.
    hub.unwatch(AGENT)
    assert wait_until(lambda: connections_to(clean_dovecot.imap_port) == 0)
    later = [message("while away 1"), message("while away 2")]
    uids += [clean_dovecot.append(AGENT, raw) for raw in later]
    hub.watch(spec)
    assert sink.wait(lambda: len(sink.messages) == 4)
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    assert sink.uids(AGENT) == uids[1:]  # none twice, none lost
    assert [m[3] for m in sink.messages[2:]] == later

    with imap(clean_dovecot, AGENT, password) as client:  # the watcher changed no flag
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(uids)
    assert [b"\\Seen" in flags[uid] for uid in uids] == [False, True, False, False, False]


def test_changed_uidvalidity_delivers_every_message_again(clean_dovecot, mail_ca, mail_users, make_hub):
    password = mail_users[AGENT]
    for n in (1, 2):
        clean_dovecot.append(AGENT, message(f"old {n}"), folder="Support")
    sink = Sink()
    hub = make_hub(sink)
    hub.watch(spec_for(clean_dovecot, AGENT, password, ca=mail_ca, folder="Support"))
    assert sink.wait(lambda: len(sink.messages) == 2)
    old_validity = sink.messages[0][1]
    assert wait_until(lambda: hub.stats()["idling"] == 1)

    # Delete and recreate the folder under the watcher: a new UIDVALIDITY, UIDs from 1 again.
    fresh = [message("new 1"), message("new 2"), message("new 3")]
    with imap(clean_dovecot, AGENT, password) as client:
        client.delete_folder("Support")
        client.create_folder("Support")
        for raw in fresh:
            client.append("Support", raw)
        new_validity = client.folder_status("Support", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    assert new_validity != old_validity
    # The stored position says (old validity, uid 2): without the validity check
    # UIDs 1 and 2 of the new folder would be skipped.
    assert sink.wait(lambda: len(sink.uids(AGENT, new_validity)) == 3, timeout=5)
    assert [(m[1], m[2], m[3]) for m in sink.messages[2:]] == [(new_validity, n + 1, raw)
                                                               for n, raw in enumerate(fresh)]
    assert sink.positions[AGENT] == (new_validity, 3)


def test_dovecot_restart_is_reported_and_recovered(dovecot_factory, mail_ca, mail_users, make_hub):
    server = dovecot_factory()
    sink = Sink()
    hub = make_hub(sink, reconnect=Reconnect(base=0.2))
    hub.watch(spec_for(server, AGENT, mail_users[AGENT], ca=mail_ca))
    assert wait_until(lambda: hub.stats()["idling"] == 1)

    server.stop()
    assert sink.wait(lambda: sink.states(AGENT) == [True, False])
    problem = sink.statuses[-1][1]
    assert (problem.id, problem.host, problem.port) == ("imap.connect", server.host, server.imaps_port)
    assert (problem.error_code, problem.server_message) == (ErrorCode.CONNECT_FAILED, "connection refused")
    time.sleep(0.5)  # a few refused reconnects while it is down: reported once
    assert sink.states(AGENT) == [True, False]
    assert hub.stats()["down"] == 1
    server.start()
    assert sink.wait(lambda: sink.states(AGENT) == [True, False, True], timeout=10)
    assert hub.stats()["reconnects"] >= 1
    # Every reconnect is told, the quiet first one (the session dropped) included.
    assert len(sink.reconnects) == hub.stats()["reconnects"] >= 3
    first, *refused = [p for _, p in sink.reconnects]
    assert first.id != "imap.connect" and {p.id for p in refused} == {"imap.connect"}

    raw = message("after restart")
    start = time.monotonic()
    server.deliver(AGENT, raw)
    _, uid, got, when = sink.wait_message(AGENT, raw, timeout=5)
    print(f"\nafter a restart: {problem.server_message!r}; delivered in {(when - start) * 1000:.0f} ms")
    assert got == RETURN_PATH + raw and uid == 1 and when - start < 2.0


def test_wrong_password_is_reported_once_and_not_hammered(clean_dovecot, mail_ca, mail_users, make_hub, caplog):
    caplog.set_level(logging.DEBUG, logger="mailgate")
    sink = Sink()
    # Our own backoff is tiny: the login throttle (5 s after a failure) must hold it back.
    hub = make_hub(sink, reconnect=Reconnect(base=0.05, cap=0.1), throttle=LoginThrottle(base=5))
    before = auth_failures(clean_dovecot)
    wrong = "not-the-password-9f1c"
    spec = spec_for(clean_dovecot, AGENT, wrong, ca=mail_ca)
    hub.watch(spec)
    assert sink.wait(lambda: sink.statuses)
    key, problem = sink.statuses[0]
    assert (problem.id, problem.error_code, problem.host) == ("imap.auth", ErrorCode.AUTH_FAILED, "127.0.0.1")
    assert "AUTHENTICATIONFAILED" in problem.server_message
    time.sleep(2.0)
    assert auth_failures(clean_dovecot) - before == 1  # one login in 2 s, not a tight loop
    assert sink.states(AGENT) == [False]  # reported once
    assert hub.stats()["reconnects"] <= 2
    assert wrong not in caplog.text

    # The admin fixes the password: new credentials go through at once.
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert sink.wait(lambda: sink.states(AGENT) == [False, True])
    assert wait_until(lambda: hub.stats()["idling"] == 1)


def test_server_without_idle_is_polled(dovecot_no_idle, mail_ca, mail_users, make_hub):
    dovecot_no_idle.clear()
    sink = Sink()
    hub = make_hub(sink)
    hub.watch(spec_for(dovecot_no_idle, SUPPORT, mail_users[SUPPORT], ca=mail_ca, security="NONE",
                       poll_interval=0.5))
    assert wait_until(lambda: hub.stats()["polling"] == 1)
    latencies = []
    for n in (1, 2):
        raw = message(f"polled {n}")
        start = time.monotonic()
        dovecot_no_idle.deliver(SUPPORT, raw)
        _, _, got, when = sink.wait_message(SUPPORT, raw, timeout=3)
        assert got == RETURN_PATH + raw
        latencies.append(when - start)
    print(f"\npolling every 0.5 s: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < 1.0
    assert hub.stats()["idling"] == 0


def test_a_failed_commit_is_fetched_again(clean_dovecot, mail_ca, mail_users, make_hub):
    sink = Sink(fail_deliveries=1)
    hub = make_hub(sink)
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    raw = message("commit fails once")
    clean_dovecot.deliver(AGENT, raw)
    _, uid, got, _ = sink.wait_message(AGENT, raw, timeout=5)
    assert got == RETURN_PATH + raw
    assert sink.deliver_calls == 2
    assert sink.uids(AGENT) == [uid]
    assert sink.states(AGENT) == [True]  # the mailbox was fine all along
    assert wait_until(lambda: hub.stats()["idling"] == 1)
    assert hub.stats()["reconnects"] == 1


class FailingOnCall(Sink):
    """Raises on the n-th deliver() only."""

    def __init__(self, call: int) -> None:
        super().__init__()
        self.failing_call = call

    def deliver(self, key, uidvalidity, messages):
        with self.cv:
            if self.deliver_calls + 1 == self.failing_call:
                self.deliver_calls += 1
                raise RuntimeError("the queue is unavailable (test)")
        super().deliver(key, uidvalidity, messages)


def test_a_commit_failing_mid_burst_fetches_again_from_the_failed_batch(clean_dovecot, mail_ca, mail_users,
                                                                       make_hub):
    # The FETCH of the next batch is already sent when a batch is committed: a failed
    # commit drops it with the connection, and the catch-up starts at the failed batch.
    raws = [message(f"pipelined {n}") for n in range(10)]
    for raw in raws:
        clean_dovecot.append(AGENT, raw)
    sink = FailingOnCall(2)
    hub = make_hub(sink, max_batch=3)
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert sink.wait(lambda: len(sink.messages) == len(raws), timeout=10)
    uids = sink.uids(AGENT)
    assert uids == sorted(set(uids)) and [m[3] for m in sink.messages] == raws  # in order, once each
    assert sink.deliver_calls == 5  # 3, (3 failed), 3, 3, 1
    assert sink.states(AGENT) == [True] and hub.stats()["reconnects"] == 1


def test_idle_is_renewed_before_the_server_drops_it(clean_dovecot, mail_ca, mail_users, make_hub):
    sink = Sink()
    hub = make_hub(sink, idle_renew=0.2)
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert wait_until(lambda: hub.stats()["renewals"] >= 3)
    raw = message("after renewals")
    start = time.monotonic()
    clean_dovecot.deliver(AGENT, raw)
    _, _, _, when = sink.wait_message(AGENT, raw, timeout=3)
    assert when - start < 2.0
    assert hub.stats()["reconnects"] == 0 and sink.states(AGENT) == [True]


def test_a_server_stalling_mid_message_costs_one_reconnect(clean_dovecot, mail_ca, mail_users, make_hub, caplog):
    caplog.set_level(logging.INFO, logger="mailgate.watch")
    proxy = StallingProxy(clean_dovecot.imap_port)
    try:
        sink = Sink()
        hub = make_hub(sink)
        spec = MailboxSpec(AGENT, Endpoint("127.0.0.1", proxy.port, "NONE"),
                           PasswordAuth(AGENT, mail_users[AGENT]), timeout=0.5)
        hub.watch(spec)
        assert wait_until(lambda: hub.stats()["idling"] == 1)
        proxy.stall(after=2000)  # IDLE's EXISTS, DONE and the sizes pass; the body stops
        raw = message("large") + b"x" * 78 + b"\r\n" * 1  # a long line, then many more
        raw += (b"y" * 998 + b"\r\n") * 300
        start = time.monotonic()
        clean_dovecot.append(AGENT, raw)
        assert wait_until(lambda: "timed out after 0.5 s" in caplog.text, timeout=5)
        stalled = time.monotonic() - start
        _, uid, got, when = sink.wait_message(AGENT, b"Subject: large", timeout=5)
        assert got == raw and sink.uids(AGENT) == [uid]
        # One reconnect, which worked: a lost session alone does not turn the provider RED.
        assert sink.states(AGENT) == [True]
        assert hub.stats()["reconnects"] == 1
        reason = next(r.getMessage() for r in caplog.records if "timed out after" in r.getMessage())
        assert "reconnecting" in reason
        print(f"\nstall noticed after {stalled:.2f} s ({reason}); delivered after {when - start:.2f} s")
    finally:
        proxy.close()


def test_unwatch_and_close_leave_no_thread_or_socket(clean_dovecot, mail_ca, mail_users, make_hub, closed_port):
    assert hub_threads() == []
    sink = Sink()
    hub = make_hub(sink, workers=4)
    port = clean_dovecot.imaps_port
    for user in (AGENT, SUPPORT):
        hub.watch(spec_for(clean_dovecot, user, mail_users[user], ca=mail_ca))
    hub.watch(MailboxSpec("nowhere", Endpoint(closed_port.host, closed_port.port, "NONE"),
                          PasswordAuth("x", "y")))  # waits in backoff
    assert wait_until(lambda: hub.stats()["idling"] == 2 and hub.stats()["backoff"] == 1)
    assert connections_to(port) == 2
    assert 1 < hub.stats()["threads"] <= 1 + 4

    hub.unwatch(SUPPORT)
    assert wait_until(lambda: connections_to(port) == 1)
    assert hub.stats()["watching"] == 2

    hub.close()
    assert connections_to(port) == 0
    assert hub_threads() == []
    assert hub.stats()["watching"] == 0 and hub.stats()["threads"] == 0
    with pytest.raises(RuntimeError):
        hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    hub.close()  # twice is fine


def test_two_hundred_mailboxes_on_one_selector_thread(tmp_path, mail_ca, make_hub):
    users = {f"user{n:03d}@example.test": f"pw-{n}" for n in range(200)}
    with Dovecot(tmp_path / "dovecot", users, mail_ca, client_limit=50) as server:
        sink = Sink()
        threads_before = threading.active_count()
        rss_before = rss_kb()
        hub = make_hub(sink, workers=16)
        start = time.monotonic()
        for user, password in users.items():
            hub.watch(spec_for(server, user, password, ca=mail_ca))
        assert wait_until(lambda: hub.stats()["idling"] == 200, timeout=30), hub.stats()
        opened = time.monotonic() - start
        rss_after = rss_kb()
        stats = hub.stats()
        assert stats["threads"] <= 1 + 16
        assert threading.active_count() <= threads_before + 1 + 16 + 1  # + the transport watchdog
        assert connections_to(server.imaps_port) == 200

        raw = message("one of many")
        start = time.monotonic()
        server.deliver("user137@example.test", raw)
        _, uid, got, when = sink.wait_message("user137@example.test", raw, timeout=3)
        assert got == RETURN_PATH + raw and uid == 1
        latency = when - start
        assert latency < 2.0
        assert len(sink.messages) == 1
        print(f"\n200 TLS mailboxes: IDLE on all after {opened:.2f} s; hub threads {stats['threads']}; "
              f"RSS +{(rss_after - rss_before) / 200:.0f} KB per mailbox (incl. pool stacks); "
              f"a message to one arrived in {latency * 1000:.0f} ms")
        start = time.monotonic()
        hub.close()
        assert time.monotonic() - start < 2.0
        assert connections_to(server.imaps_port) == 0


def test_the_hub_delivers_byte_for_byte_what_imapclient_fetches(clean_dovecot, mail_ca, mail_users, make_hub):
    """The hub speaks IDLE and FETCH below imapclient (transport/imap_wire.py): what it
    delivers must be exactly what imapclient's own fetch of BODY.PEEK[] returns."""
    bodies = [
        message("plain"),
        message("8bit") + "Grüße, Ünïcödé\r\n".encode() + bytes(range(128, 256)) + b"\r\n",
        message("long lines") + (b"z" * 990 + b"\r\n") * 50,
        message("large") + b"".join(b"line %06d of a large message\r\n" % i for i in range(4000)),
        message("no final newline").rstrip(b"\r\n"),
    ]
    for raw in bodies:
        clean_dovecot.append(AGENT, raw)
    sink = Sink()
    hub = make_hub(sink, max_batch=2)  # several pipelined FETCHes
    hub.watch(spec_for(clean_dovecot, AGENT, mail_users[AGENT], ca=mail_ca))
    assert sink.wait(lambda: len(sink.messages) == len(bodies), timeout=10)
    with imap(clean_dovecot, AGENT, mail_users[AGENT]) as client:
        client.select_folder("INBOX", readonly=True)
        fetched = {uid: data[b"BODY[]"] for uid, data in client.fetch(client.search(), ["BODY.PEEK[]"]).items()}
    assert {uid: raw for _, _, uid, raw, _ in sink.messages} == fetched
    assert sorted(fetched.values(), key=len) == sorted(bodies, key=len)


def test_a_mailbox_down_for_long_is_tried_again_at_least_every_30_s():
    """After an outage receiving comes back within half a minute, however long it lasted
    (failed logins wait on the login throttle instead)."""
    hub, poller = WatchHub(Sink()), Pop3Poller(Sink())
    try:
        for watcher in (hub, poller):
            assert max(watcher.reconnect.delay(n) for n in range(1, 200)) <= 30
            assert watcher.reconnect.delay(1) <= 1  # a blip is retried at once
    finally:
        hub.close()
        poller.close()
