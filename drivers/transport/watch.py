"""Watching mailboxes for new mail: IMAP IDLE multiplexed on one selector thread.

A :class:`WatchHub` watches any number of mailboxes (:class:`MailboxSpec`) and hands
every new message to a :class:`MailboxSink` (the inbound queue) with its UIDVALIDITY
and UID. Blocking code, thread-safe; no thread per mailbox:

* ONE selector thread owns every connection that waits: IDLE sockets registered with
  ``selectors.DefaultSelector`` (epoll), and timers (IDLE renewal, polling, reconnect
  backoff) in a heap. It never reads or writes a socket; it only decides who works next.
* A bounded pool of ``workers`` threads does the talking: connect (connect_imap, with
  the login throttle), EXAMINE, catch up, fetch, ``sink.deliver``, start IDLE again.
* A mailbox belongs to exactly one of them at a time (``_Mailbox.where``): registered
  with the selector, waiting on a timer, or in one pool job. Jobs hand it back through
  the selector's queue, so one connection is never used by two threads.

The IDLE conversation and the pipelined FETCH are spoken through
:class:`~.imap_wire.ImapWire` (imaplib's private calls, in one place; it says why
imapclient's idle()/fetch() do not serve here); imapclient still does the connection
(connect_imap) and EXAMINE.

Guarantees:

* The mailbox is opened with EXAMINE (read-only) and bodies are fetched with
  BODY.PEEK[]: no flag is ever changed. New mail is found by UID, never by \\Seen or
  the Date header: on every (re)connect from ``sink.position`` (UIDVALIDITY, highest
  committed UID), afterwards from the last UID delivered. A different UIDVALIDITY
  delivers every message under the new one (the sink deduplicates).
* A message counts as fetched only once ``sink.deliver`` returned; if it raises, the
  connection is dropped and the messages are fetched again after a backoff.
* Every read has the socket timeout (``spec.timeout``) and every command an overall
  deadline (the transport watchdog), so a server that stalls, or drips, in the middle
  of a large message costs one reconnect, never a worker.
* Every read is bounded (limits.py): a message the server announces (RFC822.SIZE) as
  larger than ``max_message_bytes`` is never downloaded (logged, and skipped for
  good); a FETCH literal larger than the size announced for its message, or any
  other answer past its limit, is refused before it is read and the connection
  dropped. The deadline of a FETCH grows with the announced sizes, so with that limit.
* Failures close the connection and reconnect with exponential backoff and jitter
  (failed logins also go through the LoginThrottle, so a revoked password is not
  hammered). ``status(up=False, reason)`` is reported once (again only if the reason
  changes), ``status(up=True, "")`` when it works again. A session that was working and
  drops (servers and middleboxes end idle sessions routinely) is first retried quietly:
  the status turns down only if getting back in fails too, with that attempt's reason.
* After new mail is fetched the job starts IDLE again at once (no lingering): Dovecot
  announces mail ~0.5 s after delivery; the watcher adds milliseconds.
* Every ``idle_renew`` seconds IDLE is ended, the folder EXAMINEd again (a session can
  hold a stale view of a folder replaced under it) and checked for mail, and IDLE
  restarted; an untagged NO/BAD during IDLE does the same at once.

Do not call close() from a sink callback (it waits for the pool). unwatch() returns at
once; the connection closes within milliseconds, or after a login in progress.
"""
from __future__ import annotations

import collections
import heapq
import imaplib
import itertools
import logging
import random
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator, Protocol

import imapclient

from mailgate.drivers.api import CheckResult, ErrorCode

from . import _watchdog
from .auth import Authenticator
from .endpoint import Endpoint
from .errors import TransportError, classify, where
from .imap import connect_imap
from .imap_wire import ImapWire
from .limits import MAX_MESSAGE_BYTES, allowance, human
from .reconnect import Reconnect
from .throttle import LoginThrottle

__all__ = ["MailboxSink", "MailboxSpec", "WatchHub"]

log = logging.getLogger("mailgate.watch")

# IDLE rounds (fetch, IDLE again) one job does before it yields its worker to others.
_ROUNDS_PER_JOB = 20
_hub_ids = itertools.count(1)


class MailboxSink(Protocol):
    """Where watched mail goes (the inbound queue). Called from pool threads; may block."""

    def position(self, key: str) -> tuple[int | None, int]:
        """(uidvalidity, highest UID already committed); (None, 0) when never seen."""

    def deliver(self, key: str, uidvalidity: int, messages: list[tuple[int, bytes]]) -> None:
        """Commits (uid, exact RFC822 bytes) durably before returning, in UID order;
        raising means not committed (they are fetched again later)."""

    def status(self, key: str, problem: CheckResult | None) -> None:
        """The mailbox became reachable (None) or not (the failed step); called on
        changes only."""

    def reconnecting(self, key: str, problem: CheckResult) -> None:
        """The connection failed or dropped (the failed step) and is tried again:
        called at every retry, quiet ones included; never blocks."""


@dataclass(frozen=True)
class MailboxSpec:
    key: str
    endpoint: Endpoint
    auth: Authenticator
    folder: str = "INBOX"
    timeout: float = 10.0  # every read on the connection; connect_imap's deadline is 3x
    ca_pem: str | None = None
    poll_interval: float = 30.0  # used only when the server has no IDLE

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("key must not be empty")
        if not self.folder:
            raise ValueError("folder must not be empty")
        if not self.timeout or self.timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if not self.poll_interval or self.poll_interval <= 0:
            raise ValueError("poll_interval must be a positive number of seconds")


class _SinkFailed(Exception):
    """The sink raised: not the mailbox's fault (no status change), retried later."""


class _Mailbox:
    """One watched mailbox. Small on purpose: the connection is most of it."""

    __slots__ = ("spec", "lock", "client", "wire", "sock", "stopped", "where", "due", "phase", "step", "idle",
                 "idle_tag", "validity", "last", "exists", "examined", "failures", "ok_since", "problem")

    def __init__(self, spec: MailboxSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()  # guards `client` against close/abort races
        self.client: imapclient.IMAPClient | None = None
        self.wire: ImapWire | None = None  # the same connection, below imapclient
        self.sock: socket.socket | None = None  # registered with the selector
        self.stopped = False
        self.where = "pool"  # pool | socket | timer | gone: who owns it now
        self.due: float | None = None  # the selector's timer for it (lazy heap deletion)
        self.phase = "connecting"  # for stats: connecting fetching idling polling backoff
        self.step = "connect"  # for classifying errors
        self.idle = False  # the server offers IDLE
        self.idle_tag: bytes | None = None  # IDLE running under this tag
        self.validity: int | None = None
        self.last = 0  # highest UID delivered (or skipped as expunged)
        self.exists = 0  # messages in the folder as this connection last saw them
        self.examined = 0.0  # when the folder was last EXAMINEd (monotonic)
        self.failures = 0
        self.ok_since: float | None = None
        self.problem: CheckResult | None | bool = False  # last status reported (False: none yet)


class WatchHub:
    """Watches mailboxes; see the module docstring."""

    def __init__(self, sink: MailboxSink, *, workers: int = 16, idle_renew: float = 25 * 60,
                 reconnect: Reconnect = Reconnect(), throttle: LoginThrottle | None = None,
                 max_batch: int = 100, max_batch_bytes: int = 20 * 1024 * 1024,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if workers < 1 or max_batch < 1 or max_batch_bytes < 1 or max_message_bytes < 1:
            raise ValueError("workers, max_batch, max_batch_bytes and max_message_bytes must be positive")
        if idle_renew <= 0:
            raise ValueError("idle_renew must be positive")
        self._sink = sink
        self._idle_renew = idle_renew
        self.reconnect = reconnect
        self._throttle = throttle
        self._max_batch, self._max_batch_bytes = max_batch, max_batch_bytes
        self._max_message = max_message_bytes
        self._lock = threading.Lock()  # _boxes, _closed, _counts
        self._boxes: dict[str, _Mailbox] = {}
        self._closed = False
        self._counts = collections.Counter()
        self._name = f"mailgate-watch-{next(_hub_ids)}"  # thread names: <name>-worker_<n>, <name>-selector
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{self._name}-worker")
        # The selector thread's world: only it touches these (and _inbox is a deque).
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._inbox: collections.deque = collections.deque()
        self._heap: list[tuple[float, int, _Mailbox, str]] = []
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run_selector, name=f"{self._name}-selector", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------

    def watch(self, spec: MailboxSpec) -> None:
        """Starts watching spec.key; with other settings than before, restarts it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("WatchHub is closed")
            old = self._boxes.get(spec.key)
            if old is not None and _same(old.spec, spec):
                return
            mb = _Mailbox(spec)
            if old is not None:
                mb.problem = old.problem  # status is reported on changes only
                self._stop(old)
            self._boxes[spec.key] = mb
        self._submit(mb, "connect")

    def unwatch(self, key: str) -> None:
        """Stops watching key and closes its connection (no-op if not watched)."""
        with self._lock:
            mb = self._boxes.pop(key, None)
            if mb is not None:
                self._stop(mb)

    def close(self) -> None:
        """Stops everything: connections closed, threads joined. Waits for jobs running
        in the sink, and for a login in progress (at most 3 x its timeout)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            boxes = list(self._boxes.values())
            self._boxes.clear()
            for mb in boxes:
                self._stop(mb)
        self._wake()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for mb in boxes:  # whatever was queued or handed back after the selector stopped
            self._close_client(mb)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> WatchHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        """watching, connecting, fetching, idling, polling, backoff (mailboxes in each
        phase), down (last status False), reconnects, delivered (messages), renewals
        (of IDLE), threads (this hub's: selector and pool workers)."""
        with self._lock:
            boxes = list(self._boxes.values())
            counts = dict(self._counts)
        phases = collections.Counter(mb.phase for mb in boxes)
        out = {"watching": len(boxes)}
        for phase in ("connecting", "fetching", "idling", "polling", "backoff"):
            out[phase] = phases.get(phase, 0)
        out["down"] = sum(1 for mb in boxes if isinstance(mb.problem, CheckResult))
        out["reconnects"] = counts.get("reconnects", 0)
        out["delivered"] = counts.get("delivered", 0)
        out["renewals"] = counts.get("renewals", 0)
        out["threads"] = sum(1 for t in threading.enumerate() if t.name.startswith(self._name + "-"))
        return out

    # -- ownership hand-offs -----------------------------------------------------------

    def _stop(self, mb: _Mailbox) -> None:
        """Marks mb stopped and interrupts a job blocked on its socket (self._lock held)."""
        mb.stopped = True
        _abort(mb)
        self._post(("drop", mb))

    def _post(self, item: tuple) -> None:
        self._inbox.append(item)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def _submit(self, mb: _Mailbox, action: str) -> None:
        mb.where, mb.due = "pool", None
        try:
            self._pool.submit(self._job, mb, action)
        except RuntimeError:  # the pool is shut down: closing
            mb.stopped = True
            self._close_client(mb)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    # -- the selector thread -----------------------------------------------------------

    def _run_selector(self) -> None:
        try:
            while True:
                timeout = max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None
                for key, _ in self._sel.select(timeout):
                    if key.data is None:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                        continue
                    mb = key.data
                    self._unregister(mb)
                    self._submit(mb, "wake")
                while self._inbox:
                    self._handle(self._inbox.popleft())
                if self._closed:
                    return
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    when, _, mb, action = heapq.heappop(self._heap)
                    if mb.due != when or mb.where not in ("socket", "timer"):
                        continue  # superseded
                    if mb.where == "socket":
                        self._unregister(mb)
                    self._submit(mb, action)
                if len(self._heap) > 2 * len(self._boxes) + 64:
                    self._heap = [e for e in self._heap if e[2].due == e[0] and e[2].where in ("socket", "timer")]
                    heapq.heapify(self._heap)
        except BaseException:  # pragma: no cover - a bug: say so loudly, close() still works
            log.critical("watch selector thread crashed", exc_info=True)
            raise
        finally:
            for key in list(self._sel.get_map().values()):
                if key.data is not None:
                    self._unregister(key.data)
                    self._close_client(key.data)
                    key.data.where = "gone"

    def _handle(self, item: tuple) -> None:
        what, mb = item[0], item[1]
        if what == "drop":
            if mb.where in ("socket", "timer"):
                if mb.where == "socket":
                    self._unregister(mb)
                mb.where, mb.due = "gone", None
                self._close_client(mb)
            return  # "pool": the job hands it back, sees it stopped and closes it
        if mb.stopped:
            mb.where, mb.due = "gone", None
            self._close_client(mb)
            return
        now = time.monotonic()
        if what == "idle":
            try:
                sock = mb.client.socket()
                self._sel.register(sock, selectors.EVENT_READ, mb)
            except (AttributeError, ValueError, KeyError, OSError):  # closed meanwhile: let a job find out
                self._submit(mb, "wake")
                return
            mb.sock = sock
            # Jittered so that mailboxes opened together do not all renew in the same second.
            mb.where, mb.due = "socket", now + self._idle_renew * random.uniform(0.9, 1.0)
            heapq.heappush(self._heap, (mb.due, next(self._seq), mb, "renew"))
        elif what == "timer":
            _, _, delay, action = item
            mb.where, mb.due = "timer", now + delay
            heapq.heappush(self._heap, (mb.due, next(self._seq), mb, action))
        elif what == "now":
            self._submit(mb, item[2])

    def _unregister(self, mb: _Mailbox) -> None:
        sock, mb.sock = mb.sock, None
        if sock is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
        mb.where = "pool"

    # -- pool jobs -------------------------------------------------------------------

    def _job(self, mb: _Mailbox, action: str) -> None:
        if mb.stopped:
            self._close_client(mb)
            mb.where = "gone"
            return
        try:
            if action == "connect":
                self._connect(mb)
            elif action == "wake":
                self._serve_idle(mb)
            elif action == "renew":
                self._renew(mb)
            elif action == "poll":
                self._poll(mb)
            else:  # pragma: no cover
                raise AssertionError(action)
        except Exception as exc:  # noqa: BLE001 - every failure means: close, report, reconnect
            self._failed(mb, exc)
        except BaseException:
            self._close_client(mb)
            raise

    def _connect(self, mb: _Mailbox) -> None:
        spec = mb.spec
        mb.phase, mb.step, mb.idle_tag = "connecting", "connect", None
        client = connect_imap(spec.endpoint, spec.auth, timeout=spec.timeout, ca_pem=spec.ca_pem,
                              throttle=self._throttle)
        wire = ImapWire(client)
        with mb.lock:
            if mb.stopped:
                wire.shutdown()
                return self._post(("gone", mb))
            mb.client, mb.wire = client, wire
        with self._deadline(mb, 3 * spec.timeout):
            mb.idle = client.has_capability("IDLE")
        validity = self._examine(mb)
        try:
            stored, last = self._sink.position(spec.key)
        except Exception as exc:
            raise _SinkFailed("position") from exc
        if stored != validity:
            if stored is not None:
                log.info("watch %s: UIDVALIDITY of %r changed from %s to %s: delivering all its messages again",
                         spec.key, spec.folder, stored, validity)
            last = 0
        mb.validity, mb.last = validity, last
        recovered = isinstance(mb.problem, CheckResult)
        self._status(mb, None)
        log.info("watch %s: %s %s folder %r (uidvalidity %d, from uid %d, %s)", spec.key,
                 "recovered, connected to" if recovered else "connected to", where(spec.endpoint),
                 spec.folder, validity, last, "IDLE" if mb.idle else f"polling every {spec.poll_interval:g} s")
        self._sync(mb)
        mb.ok_since = time.monotonic()
        if mb.idle:
            self._idle_start(mb)
            self._serve_idle(mb)
        else:
            self._park_poll(mb)

    def _serve_idle(self, mb: _Mailbox) -> None:
        """IDLE is running (or the server just ended it): handle what the server sent,
        fetch and IDLE again when there is new mail, and give the socket back to the
        selector when nothing more is waiting."""
        wire = mb.wire
        if wire is None:
            raise TransportError("imap", "session", ErrorCode.PROTOCOL_ERROR, "connection closed")
        for _ in range(_ROUNDS_PER_JOB):
            reopen = False
            if not wire.announced(mb.exists) and mb.idle_tag is not None:
                if not wire.ready(mb.spec.timeout):
                    mb.phase = "idling"
                    return self._post(("idle", mb))
                self._read_idle(mb)
                reopen = wire.suspicious()
                if not reopen and not wire.announced(mb.exists) and mb.idle_tag is not None:
                    # Keep-alives, flag changes, expunges: nothing to fetch.
                    mb.exists = max(0, mb.exists - wire.expunged())
                    wire.clear()
                    continue
            if mb.idle_tag is not None:
                self._idle_done(mb)
            if reopen:
                self._reopen(mb)
            self._sync(mb)
            self._idle_start(mb)
        self._post(("now", mb, "wake"))  # busy mailbox: let the others have a worker too

    def _renew(self, mb: _Mailbox) -> None:
        """Before the server's IDLE limit (RFC 2177: 29 min): DONE, EXAMINE again (the
        session's view could be stale), look for mail, IDLE."""
        self._count("renewals")
        if mb.idle_tag is not None:
            self._idle_done(mb)
        self._reopen(mb)
        self._sync(mb)
        self._idle_start(mb)
        self._serve_idle(mb)

    def _poll(self, mb: _Mailbox) -> None:
        with self._deadline(mb, 3 * mb.spec.timeout):
            mb.client.noop()
        if mb.wire.suspicious() or time.monotonic() - mb.examined >= self._idle_renew:
            self._reopen(mb)
        self._sync(mb)
        self._park_poll(mb)

    def _examine(self, mb: _Mailbox) -> int:
        """EXAMINE (read-only SELECT) the folder; returns its UIDVALIDITY."""
        spec = mb.spec
        mb.step = "select"
        with self._deadline(mb, 3 * spec.timeout):
            info = mb.client.select_folder(spec.folder, readonly=True)
        mb.exists = info.get(b"EXISTS") or 0
        validity = info.get(b"UIDVALIDITY")
        if not isinstance(validity, int):
            raise TransportError("imap", "select", ErrorCode.PROTOCOL_ERROR,
                                 f"the server gave no UIDVALIDITY for folder {spec.folder!r}")
        mb.step = "session"
        mb.examined = time.monotonic()
        return validity

    def _reopen(self, mb: _Mailbox) -> None:
        """EXAMINE again on the open connection. Dovecot, for one, keeps serving a folder
        that was deleted and recreated under an IDLE session from its old view, saying
        only "* NO Internal error occurred"; a new EXAMINE sees the new folder."""
        validity = self._examine(mb)
        if validity != mb.validity:
            log.info("watch %s: UIDVALIDITY of %r changed from %s to %s: delivering all its messages again",
                     mb.spec.key, mb.spec.folder, mb.validity, validity)
            mb.validity, mb.last = validity, 0

    def _park_poll(self, mb: _Mailbox) -> None:
        mb.phase = "polling"
        self._post(("timer", mb, mb.spec.poll_interval, "poll"))

    # -- IMAP conversation (pool threads, the mailbox's owner) ---------------------------

    def _idle_start(self, mb: _Mailbox) -> None:
        with self._deadline(mb, 3 * mb.spec.timeout):
            mb.idle_tag = mb.wire.start_idle()

    def _read_idle(self, mb: _Mailbox) -> None:
        """Reads what the server sent during IDLE (at least one byte is waiting)."""
        with self._deadline(mb, 3 * mb.spec.timeout):
            if not mb.wire.read_idle(mb.idle_tag, mb.spec.timeout):
                mb.idle_tag = None  # the server ended IDLE by itself

    def _idle_done(self, mb: _Mailbox) -> None:
        tag, mb.idle_tag = mb.idle_tag, None
        with self._deadline(mb, 3 * mb.spec.timeout):
            mb.wire.end_idle(tag)

    def _sync(self, mb: _Mailbox) -> None:
        """Fetches and delivers every message with a UID above mb.last, in batches;
        again while the server announces more (EXISTS) during the fetch."""
        mb.phase = "fetching"
        wire, spec = mb.wire, mb.spec
        empty_rounds = 0
        while True:
            with self._deadline(mb, 3 * spec.timeout):
                sizes = wire.sizes_from(mb.last + 1)
            # The highest UID is the last message: its sequence number is the count.
            mb.exists = max((info.get(b"SEQ", 0) for info in sizes.values()), default=0)
            new = sorted((uid, info.get(b"RFC822.SIZE") or 0) for uid, info in sizes.items()
                         if uid > mb.last and b"RFC822.SIZE" in info)
            oversized = [(uid, size) for uid, size in new if not isinstance(size, int) or size > self._max_message]
            if oversized:
                skip = {uid for uid, _ in oversized}
                new = [item for item in new if item[0] not in skip]
                for uid, size in oversized:
                    log.warning("watch %s: uid %d not fetched: the server announces %s bytes, over the limit "
                                "of %s", spec.key, uid, f"{size:,}" if isinstance(size, int) else repr(size),
                                human(self._max_message))
            self._fetch_and_deliver(mb, list(self._batches(new)))
            if oversized:  # not downloaded, ever: later rounds start after them
                mb.last = max(mb.last, oversized[-1][0])
            # Dovecot, for one, notices new mail at the end of a command: mail that
            # arrived during this round is announced now and fetched by another round.
            more = wire.announced(mb.exists)
            wire.clear()
            empty_rounds = 0 if new else empty_rounds + 1
            if not more or empty_rounds >= 3:  # 3: a server announcing what it does not show
                return

    def _batches(self, items: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        batch: list[tuple[int, int]] = []
        total = 0
        for uid, size in items:
            if batch and (len(batch) >= self._max_batch or total + size > self._max_batch_bytes):
                yield batch
                batch, total = [], 0
            batch.append((uid, size))
            total += size
        if batch:
            yield batch

    def _fetch_and_deliver(self, mb: _Mailbox, batches: list[list[tuple[int, int]]]) -> None:
        """FETCHes the batches and hands each to the sink, in UID order. The FETCH of
        the next batch is sent before the sink commits this one (commands may be
        pipelined, RFC 3501 5.5): the server reads and sends it meanwhile. A batch
        counts as fetched (mb.last) only once the sink returned; if it raises, the
        connection is dropped with the next FETCH unread."""
        spec = mb.spec
        fetched: dict[int, dict] = {}  # by UID, whatever FETCH responses have been read
        tag = self._send_fetch(mb, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            # The deadline grows with the bytes that arrive, not with the sizes announced.
            with self._deadline(mb, 3 * spec.timeout, growing=True):
                answers = mb.wire.finish_fetch(tag)
            for uid, info in answers.items():
                fetched.setdefault(uid, {}).update(info)
            tag = self._send_fetch(mb, batches[i + 1]) if i + 1 < len(batches) else None
            messages = []
            for uid, _ in batch:
                body = fetched.pop(uid, {}).get(b"BODY[]")
                if isinstance(body, bytes):
                    messages.append((uid, body))
                else:  # expunged since the sizes were read: nothing to deliver
                    log.debug("watch %s: uid %d vanished before it was fetched", spec.key, uid)
            if messages:
                try:
                    self._sink.deliver(spec.key, mb.validity, messages)
                except Exception as exc:
                    raise _SinkFailed("deliver") from exc
                self._count("delivered", len(messages))
                log.debug("watch %s: delivered uids %d..%d (%d)", spec.key, messages[0][0], messages[-1][0],
                          len(messages))
            mb.last = batch[-1][0]

    def _send_fetch(self, mb: _Mailbox, batch: list[tuple[int, int]]) -> str:
        """Sends UID FETCH BODY.PEEK[] for the batch without waiting for the answer."""
        with self._deadline(mb, 3 * mb.spec.timeout):
            return mb.wire.send_fetch({uid: allowance(size, self._max_message) for uid, size in batch})

    @contextmanager
    def _deadline(self, mb: _Mailbox, seconds: float, growing: bool = False) -> Iterator[None]:
        """An overall limit for one command, on top of the per-read socket timeout: the
        watchdog shuts the socket down when it passes, and the read in progress fails.
        `growing`: each byte read moves it on (_watchdog.Guard.credit)."""
        guard = _watchdog.watch(mb.client.socket(), seconds)
        imap = mb.wire.imap
        if growing:
            imap.progress = guard.credit
        try:
            yield
        except Exception as exc:
            if guard.fired:
                raise _overall_timeout(guard.allowed) from exc
            raise
        finally:
            imap.progress = None
            guard.cancel()
        if guard.fired:
            raise _overall_timeout(guard.allowed)

    # -- failures and status ---------------------------------------------------------

    def _failed(self, mb: _Mailbox, exc: Exception) -> None:
        self._close_client(mb)
        if mb.stopped:
            return self._post(("gone", mb))
        spec = mb.spec
        now = time.monotonic()
        lost = mb.ok_since is not None  # an established session failed (not a connect attempt)
        if lost and now - mb.ok_since >= self.reconnect.healthy_after:
            mb.failures = 0
        mb.ok_since = None
        if isinstance(exc, _SinkFailed):
            mb.failures += 1
            delay = self.reconnect.delay(mb.failures)
            log.warning("watch %s: the queue failed to take mail (%s: %s); fetching it again in %.1f s",
                        spec.key, type(exc.__cause__).__name__, exc.__cause__, delay,
                        exc_info=exc.__cause__)
        else:
            err = self._classify(mb, exc)
            problem = self._problem(mb, err)
            if err.code is ErrorCode.BACKOFF:  # the throttle said when: no login attempt was made
                delay = (err.retry_after or self.reconnect.base) + random.uniform(0, self.reconnect.base)
                if not isinstance(mb.problem, CheckResult):
                    self._status(mb, problem)
            else:
                # Servers and middleboxes drop idle sessions routinely: the first loss in a
                # row is retried at once without turning the provider RED; the status
                # says down when getting back in fails too (with that attempt's problem).
                # An unreachable token endpoint says nothing about the mailbox: retried
                # with backoff, never reported down.
                quiet = (lost and mb.failures == 0) or err.code is ErrorCode.TOKEN_UNAVAILABLE
                mb.failures += 1
                delay = self.reconnect.delay(mb.failures)
                if not quiet:
                    self._status(mb, problem)
            log.info("watch %s: %s at %s: %s; reconnecting in %.1f s", spec.key, problem.id,
                     where(spec.endpoint), problem.server_message, delay)
            self._reconnecting(mb, problem)
        mb.phase = "backoff"
        self._count("reconnects")
        self._post(("timer", mb, delay, "connect"))

    @staticmethod
    def _problem(mb: _Mailbox, err: TransportError) -> CheckResult:
        if err.step == "select":  # the folder, not the mailbox, is the trouble
            err = TransportError(err.side, err.step, err.code, f"folder {mb.spec.folder!r}: {err.message}",
                                 err.retry_after)
        return err.check(mb.spec.endpoint.host, mb.spec.endpoint.port)

    def _classify(self, mb: _Mailbox, exc: Exception) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, imaplib.IMAP4.abort) and "EOF" in str(exc):
            return TransportError("imap", mb.step, ErrorCode.PROTOCOL_ERROR, "the server closed the connection")
        if not isinstance(exc, (OSError, EOFError, imaplib.IMAP4.error)):
            log.warning("watch %s: unexpected error", mb.spec.key, exc_info=exc)  # a bug of ours
        return classify(exc, "imap", mb.step, timeout=mb.spec.timeout)

    def _status(self, mb: _Mailbox, problem: CheckResult | None) -> None:
        if mb.stopped or mb.problem == problem:
            return
        mb.problem = problem
        try:
            self._sink.status(mb.spec.key, problem)
        except Exception:  # noqa: BLE001 - the watcher goes on; the sink logs its own trouble
            log.warning("watch %s: sink.status failed", mb.spec.key, exc_info=True)

    def _reconnecting(self, mb: _Mailbox, problem: CheckResult) -> None:
        if mb.stopped:
            return
        try:
            self._sink.reconnecting(mb.spec.key, problem)
        except Exception:  # noqa: BLE001 - the watcher goes on; the sink logs its own trouble
            log.warning("watch %s: sink.reconnecting failed", mb.spec.key, exc_info=True)

    def _close_client(self, mb: _Mailbox) -> None:
        with mb.lock:
            wire, mb.client, mb.wire = mb.wire, None, None
        mb.idle_tag = None
        if wire is not None:
            wire.shutdown()


# -- helpers ---------------------------------------------------------------------------


def _same(a: MailboxSpec, b: MailboxSpec) -> bool:
    if a == b:
        return True
    if type(a.auth) is not type(b.auth) or replace(a, auth=b.auth) != b:
        return False
    try:
        return a.auth.fingerprint() == b.auth.fingerprint()
    except Exception:  # noqa: BLE001 - cannot tell: restart
        return False


def _abort(mb: _Mailbox) -> None:
    """Interrupts whatever thread reads mb's connection (it sees end of file). Under
    mb.lock: the connection is closed only with that lock, so the descriptor cannot
    have been reused by another connection."""
    with mb.lock:
        if mb.client is not None:
            try:
                # socket.socket's own shutdown: SSLSocket.shutdown would also drop its
                # TLS object under a reader's feet.
                socket.socket.shutdown(mb.client.socket(), socket.SHUT_RDWR)
            except OSError:
                pass


def _overall_timeout(seconds: float) -> TransportError:
    return TransportError("imap", "session", ErrorCode.TIMEOUT,
                          f"no complete answer within {seconds:.3g} s (overall limit)")
