"""Receiving: latency, start-up, memory per watched mailbox, a second message, bursts.

    .venv/bin/python bench/inbound.py [--sizes 1,100,1000] [--samples 50] [--gaps 0,4,8]
                                      [--second-runs 5] [--burst 10000] [--trickle 2000]
                                      [--py-spy PREFIX]

Options:

  --sizes N,...      numbers of watched mailboxes, each in a fresh mailgate (default 1,100,1000;
                     "" for none;
                     the whole bench with 1,100,1000,5000 took 7.5 minutes on 2 cores)
  --samples K        latency samples per size, and of the bare IDLE baseline (default 50)
  --gaps S,...       seconds between a first and a second message to one mailbox (default 0,4,8)
  --second-runs R    runs per gap (default 5)
  --burst B          messages of 10 KB in the burst (default 10000; 0 skips the burst)
  --trickle T        messages of 10 KB APPENDed one at a time before the burst (default 2000; 0 skips)
  --py-spy PREFIX    sample mailgate with py-spy during the burst into PREFIX (.svg flame graph,
                     .json speedscope, .txt collapsed stacks; py-spy must be installed)

Starts a private Dovecot (IMAP without TLS, security NONE, on its plain port; LMTP for
delivery; client_limit large enough for the largest N: each imap process takes an inotify
instance, 128 per user here, and process_limit is 4), an aiosmtpd (mode NONE, only used by
the creation check) and, for every phase, a fresh `mailgate serve` (SQLite) in a process of
its own. A consumer (StreamInboundMail, max_in_flight 1000) acknowledges everything it gets.

* bare baseline: one imapclient session on another mailbox: IDLE, deliver (LMTP), wait
  for EXISTS, FETCH BODY.PEEK[]; --samples times.
* for each N in --sizes:
  - start-up: one message is delivered (LMTP) to each of the N mailboxes *before* the
    providers exist; then N smtp_imap providers (receive_emails, campaign "bench") are
    created over gRPC by 8 concurrent callers. A new watcher fetches its mailbox from UID 1,
    so "all watched" is the time from the first CreateProvider until all N of those
    messages came out of StreamInboundMail (connect, login, EXAMINE, first FETCH for all N).
  - memory: VmRSS of the mailgate process after that, minus VmRSS with 0 providers (a
    consumer stream already open), divided by N.
  - latency: --samples messages, one at a time, to up to --samples of the N mailboxes
    (round robin): LMTP deliver start -> arrival on the stream.
* second message: one provider, and a bare imapclient session on another mailbox that
  listens as a watcher should (IDLE; on EXISTS: DONE, FETCH what is new, IDLE again at
  once). A first message goes to both mailboxes, a second one --gaps seconds after the
  first was delivered; latency of the second (deliver -> stream, or -> FETCHed). A watcher
  that lingers before it listens again would show it at some gap.
* burst: --burst messages are APPENDed to a staging folder of the mailbox, then put into
  INBOX by one COPY, so that the whole burst lands at once (APPENDing them one by one would
  measure APPEND). End to end: COPY start -> the last message out of the stream (Dovecot's
  ~0.5 s notification delay included), with the CPU time per message of mailgate and its
  parsing processes, and how busy the machine's cores were from the first message out to
  the last (every process: near 100 %, the burst is bound by CPU); the stream must
  give them in arrival order. Against, on the same Dovecot: a bare imapclient IDLE session
  on another mailbox given the same burst by COPY (COPY -> EXISTS -> FETCH BODY.PEEK[] by
  500), and a bare batched FETCH BODY.PEEK[] (by 500) of the burst's messages.
* trickle: before the burst, in the same mailgate, --trickle messages APPENDed one at a
  time by one client (APPEND rate; end to end from the first APPEND to the last on the
  stream): the stream keeps pace with mail arriving one by one.
"""
from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

from imapclient import IMAPClient

from mailgate.testing.consumer import Consumer
from mailgate.testing.servers.certs import TestCA
from mailgate.testing.servers.dovecot import Dovecot
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc
from rig import MachineCpu, mailgate_process, percentile, smtp_server
from send import start_py_spy, stop_py_spy

PASSWORD = "pw"
BARE = "bare@example.test"
BURST = "burst@example.test"
BARE_BURST = "bare-burst@example.test"
SECOND = "second@example.test"
BARE_SECOND = "bare-second@example.test"
STAGING = "staging"


def mail(to: str, subject: str, size: int = 0) -> bytes:
    m = EmailMessage()
    m["From"] = "customer@example.test"
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '.')}@example.test>"
    m.set_content("Hello.\n" + ("x" * 76 + "\n") * (size // 77))
    return bytes(m).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Stream:
    """A Consumer on campaign "bench" that acknowledges everything and records arrivals."""

    def __init__(self, server):
        self.consumer = Consumer(server, campaign="bench", max_in_flight=1000, deadline=60)
        self.arrived: queue.Queue = queue.Queue()  # (monotonic time, subject)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            first = self.consumer.received.get()
            if not hasattr(first, "ack_id"):
                return  # the stream ended
            batch = [first]
            while not self.consumer.received.empty():
                batch.append(self.consumer.received.get())
            now = time.monotonic()
            got = [r for r in batch if hasattr(r, "ack_id")]
            for r in got:
                self.arrived.put((now, r.message.subject))
            self.consumer.ack(*got)

    def wait(self, n: int, timeout: float) -> list[tuple[float, str]]:
        return [self.arrived.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.consumer.close()
        time.sleep(0.5)  # let the server release the stream before it is terminated


def create_providers(stub, users: list[str], dovecot: Dovecot, smtp: tuple[str, int], ca: TestCA) -> list:
    def create(user: str):
        return stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name=user, type="smtp_imap", account=user, receive_emails=True, campaign="bench",
            smtp_imap=provider_pb2.SmtpImapSettings(
                password=PASSWORD, ca_certificates_pem=ca.ca_pem, allow_plaintext_login=True,
                smtp=provider_pb2.Endpoint(host=smtp[0], port=smtp[1], security=provider_pb2.SECURITY_NONE),
                inbound=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imap_port,
                                              security=provider_pb2.SECURITY_NONE)))))
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, users))


def bare_idle_latency(dovecot: Dovecot, runs: int) -> list[float]:
    """IDLE, deliver, wait for EXISTS, FETCH: one session on one mailbox."""
    c = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=10)
    c.login(BARE, PASSWORD)
    c.use_uid = False
    c.select_folder("INBOX", readonly=True)
    out = []
    for i in range(runs):
        c.idle()
        t = time.monotonic()
        dovecot.deliver(BARE, mail(BARE, f"bare {i}"))
        seq = None
        while seq is None:
            for num, what in c.idle_check(timeout=10):
                if what == b"EXISTS":
                    seq = num
        c.idle_done()
        c.fetch([seq], ["BODY.PEEK[]"])  # by sequence number (use_uid off)
        out.append(time.monotonic() - t)
    c.logout()
    return out


def run_size(n: int, samples: int, dovecot: Dovecot, smtp, ca: TestCA, root: Path) -> dict:
    users = [f"n{n}-u{i}@example.test" for i in range(n)]
    with ThreadPoolExecutor(4) as pool:  # the start-up messages, before the providers exist
        list(pool.map(lambda u: dovecot.deliver(u, mail(u, f"seed {u}")), users))
    (root / f"mg{n}").mkdir()
    with mailgate_process(root / f"mg{n}") as (pid, channel):
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        server = type("Server", (), {"channel": channel})()
        stream = Stream(server)
        time.sleep(1)
        rss0 = rss_kb(pid)
        t0 = time.monotonic()
        create_providers(stub, users, dovecot, smtp, ca)
        created = time.monotonic() - t0
        seeds = stream.wait(n, timeout=60 + n * 0.5)
        all_watched = max(t for t, _ in seeds) - t0
        time.sleep(1)
        rss1 = rss_kb(pid)
        workers = sum(rss_kb(int(c)) for c in children(pid))  # fixed, whatever N: reported apart
        lat = []
        sampled = users[:: max(1, n // samples)][:samples]
        for i in range(samples):  # one at a time, round the sampled mailboxes
            u = sampled[i % len(sampled)]
            t = time.monotonic()
            dovecot.deliver(u, mail(u, f"latency {i}"))
            [(arrived, subject)] = stream.wait(1, timeout=30)
            assert subject == f"latency {i}", subject
            lat.append(arrived - t)
        stream.close()
    return dict(n=n, created=created, all_watched=all_watched, rss0=rss0, rss1=rss1, workers=workers, lat=lat)


class BareListener:
    """A bare imapclient session that listens as a watcher should: IDLE; on EXISTS, DONE,
    FETCH BODY.PEEK[] of what is new, IDLE again at once. Records (time, subject)."""

    def __init__(self, dovecot: Dovecot, user: str):
        self.c = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=30)
        self.c.login(user, PASSWORD)
        self.c.select_folder("INBOX", readonly=True)
        self.last = max(self.c.search(), default=0)
        self.arrived: queue.Queue = queue.Queue()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        c = self.c
        while not self.stopped:
            c.idle()
            new = False
            while not new and not self.stopped:
                new = any(r[1:2] == (b"EXISTS",) for r in c.idle_check(timeout=1))
            c.idle_done()
            uids = [u for u in c.search(["UID", f"{self.last + 1}:*"]) if u > self.last] if new else []
            if uids:  # ("n:*" always has the highest UID, even below n: filtered)
                got = c.fetch(uids, ["BODY.PEEK[]"])
                now = time.monotonic()
                for uid in sorted(got):
                    self.arrived.put((now, _subject(got[uid][b"BODY[]"])))
                    self.last = uid

    def wait(self, n: int, timeout: float) -> list[tuple[float, str]]:
        return [self.arrived.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        self.c.logout()


def _subject(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    return ""


def run_second(gaps: list[float], runs: int, dovecot: Dovecot, smtp, ca: TestCA, root: Path) -> dict:
    """{gap: (mailgate latencies, bare latencies)} of the second message."""
    out: dict[float, tuple[list[float], list[float]]] = {g: ([], []) for g in gaps}
    (root / "second").mkdir()
    bare = BareListener(dovecot, BARE_SECOND)
    try:
        with mailgate_process(root / "second") as (_, channel):
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            stream = Stream(type("Server", (), {"channel": channel})())
            create_providers(stub, [SECOND], dovecot, smtp, ca)
            for user, side in ((SECOND, stream), (BARE_SECOND, bare)):  # both listening
                dovecot.deliver(user, mail(user, "warm-up"))
                side.wait(1, timeout=30)
            for gap in gaps:
                for i in range(runs):
                    time.sleep(1.0)  # both IDLE again before the first message
                    for user in (SECOND, BARE_SECOND):
                        dovecot.deliver(user, mail(user, f"first {gap} {i}"))
                    time.sleep(gap)
                    starts = {}
                    for user in (SECOND, BARE_SECOND):
                        starts[user] = time.monotonic()
                        dovecot.deliver(user, mail(user, f"second {gap} {i}"))
                    for user, side, lat in ((SECOND, stream, out[gap][0]), (BARE_SECOND, bare, out[gap][1])):
                        got = dict((subject, t) for t, subject in side.wait(2, timeout=60))
                        lat.append(got[f"second {gap} {i}"] - starts[user])
            stream.close()
    finally:
        bare.close()
    return out


def stage(dovecot: Dovecot, user: str, msgs: list[bytes]) -> IMAPClient:
    """The messages APPENDed to the user's staging folder, which is then selected."""
    c = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=60)
    c.login(user, PASSWORD)
    c.create_folder(STAGING)
    for i in range(0, len(msgs), 500):
        c.multiappend(STAGING, msgs[i:i + 500])
    c.select_folder(STAGING)
    return c


def children(pid: int) -> list[str]:
    """The pids of a process's live children (mailgate's parsing processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):  # the parent's pid
                found.append(stat.parent.name)
        except OSError:  # gone meanwhile
            pass
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads) and of its live children."""
    total = 0
    for p in [str(pid), *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_burst(count: int, trickle: int, dovecot: Dovecot, smtp, ca: TestCA, root: Path,
              py_spy: str | None) -> dict:
    msgs = [mail(BURST, f"burst {i}", 10_000) for i in range(count)]
    c = stage(dovecot, BURST, msgs)
    r: dict = {}
    (root / "burst").mkdir()
    with mailgate_process(root / "burst") as (pid, channel):
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        stream = Stream(type("Server", (), {"channel": channel})())
        dovecot.deliver(BURST, mail(BURST, "burst seed"))
        create_providers(stub, [BURST], dovecot, smtp, ca)
        stream.wait(1, timeout=30)
        if trickle:  # first, while INBOX is small (Dovecot's APPEND slows down as it grows)
            more = [mail(BURST, f"trickle {i}", 10_000) for i in range(trickle)]
            t = time.monotonic()
            for m in more:
                c.append("INBOX", m)
            r["appended"] = time.monotonic() - t
            arrivals = stream.wait(trickle, timeout=120 + trickle * 0.05)
            r["trickle"] = max(a for a, _ in arrivals) - t
        spy = start_py_spy(py_spy, pid) if py_spy else None
        cpu = cpu_seconds(pid)
        machine = MachineCpu()
        t = time.monotonic()
        c.copy("1:*", "INBOX")
        r["copy"] = time.monotonic() - t
        arrivals = stream.wait(count, timeout=120 + count * 0.05)
        r["cpu"] = cpu_seconds(pid) - cpu
        r["busy"] = machine.busy(min(a for a, _ in arrivals), max(a for a, _ in arrivals))
        if spy:
            stop_py_spy(spy)
        assert [s for _, s in arrivals] == [f"burst {i}" for i in range(count)], "not in arrival order"
        r["first"], r["e2e"] = min(a for a, _ in arrivals) - t, max(a for a, _ in arrivals) - t
        stream.close()
    c.select_folder("INBOX", readonly=True)
    uids = c.search()[1 + trickle:]  # the burst: after the seed and the trickle
    t = time.monotonic()
    for i in range(0, len(uids), 500):
        c.fetch(uids[i:i + 500], ["BODY.PEEK[]"])
    r["bare_fetch"] = time.monotonic() - t
    c.logout()
    r["bare_exists"], r["bare_e2e"] = bare_burst(dovecot, msgs)
    return r


def bare_burst(dovecot: Dovecot, msgs: list[bytes]) -> tuple[float, float]:
    """COPY the burst into an IDLE session's INBOX: (EXISTS after, all FETCHed after)."""
    c = stage(dovecot, BARE_BURST, msgs)
    w = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=60)
    w.login(BARE_BURST, PASSWORD)
    w.use_uid = False
    w.select_folder("INBOX", readonly=True)  # empty
    w.idle()
    t = time.monotonic()
    c.copy("1:*", "INBOX")
    exists = 0
    while exists < len(msgs):
        exists = max([r[0] for r in w.idle_check(timeout=30) if r[1:2] == (b"EXISTS",)] + [exists])
    announced = time.monotonic() - t
    w.idle_done()
    for i in range(1, len(msgs) + 1, 500):  # by sequence number
        w.fetch(list(range(i, min(i + 500, len(msgs) + 1))), ["BODY.PEEK[]"])
    done = time.monotonic() - t
    w.logout()
    c.logout()
    return announced, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--gaps", default="0,4,8")
    ap.add_argument("--second-runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--trickle", type=int, default=2000)
    ap.add_argument("--py-spy", metavar="PREFIX")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    gaps = [float(g) for g in args.gaps.split(",") if g]

    users = {u: PASSWORD for n in sizes for u in (f"n{n}-u{i}@example.test" for i in range(n))}
    users.update({u: PASSWORD for u in (BARE, BURST, BARE_BURST, SECOND, BARE_SECOND)})
    # Each imap process takes an inotify instance (128 per user here) and Dovecot's
    # process_limit is 4 in this mode, so the clients per process must cover the largest N.
    client_limit = max(50, (max(sizes, default=0) + 100) // 4)
    ms = lambda x: f"{x * 1000:7.1f} ms"  # noqa: E731
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        ca = TestCA.create(root / "ca")
        with Dovecot(root / "dovecot", users, ca, client_limit=client_limit) as dovecot, \
                smtp_server(ca, users, "NONE") as smtp:
            print(f"Dovecot client_limit={client_limit}, IMAP without TLS (SECURITY_NONE), "
                  f"mailbox_idle_check_interval=1s")
            bare = bare_idle_latency(dovecot, args.samples)
            print(f"bare imapclient IDLE->EXISTS->FETCH   p50 {ms(statistics.median(bare))}  "
                  f"p99 {ms(percentile(bare, 99))}  ({len(bare)} runs)")
            for n in sizes:
                r = run_size(n, args.samples, dovecot, smtp, ca, root)
                lat = r["lat"]
                print(f"N={n:5d}  deliver->stream p50 {ms(statistics.median(lat))}  p99 {ms(percentile(lat, 99))}"
                      f" ({len(lat)} deliveries to {min(n, len(lat))} mailboxes)  create {r['created']:6.2f} s  all watched {r['all_watched']:6.2f} s"
                      f"  RSS {r['rss0'] / 1024:.0f} -> {r['rss1'] / 1024:.0f} MB"
                      f" = {(r['rss1'] - r['rss0']) / n:.0f} KB/mailbox"
                      f" (parsing processes: {r['workers'] / 1024:.0f} MB)", flush=True)
            if gaps and args.second_runs:
                second = run_second(gaps, args.second_runs, dovecot, smtp, ca, root)
                print(f"second message to the same mailbox, deliver -> out ({args.second_runs} runs each):")
                for gap, (mg, bare_lat) in second.items():
                    print(f"  {gap:g} s after the first  mailgate p50 {ms(statistics.median(mg))}  max {ms(max(mg))}"
                          f"   bare IDLE p50 {ms(statistics.median(bare_lat))}  max {ms(max(bare_lat))}", flush=True)
            if args.burst:
                n = args.burst
                r = run_burst(n, args.trickle, dovecot, smtp, ca, root, args.py_spy)
                print(f"burst {n} x 10 KB put into INBOX by one COPY ({r['copy']:.2f} s):\n"
                      f"  mailgate  COPY -> last out of the stream     {n / r['e2e']:6.0f}/s ({r['e2e']:.2f} s), "
                      f"first after {r['first']:.2f} s; mailgate CPU {r['cpu'] / n * 1000:.2f} ms/message; "
                      f"cores {r['busy'] * 100:.0f}% busy from the first out to the last\n"
                      f"  mailgate  first out -> last out                {(n - 1) / (r['e2e'] - r['first']):6.0f}/s "
                      f"(the rate once Dovecot has announced the burst)\n"
                      f"  bare      COPY -> EXISTS -> FETCH by 500     {n / r['bare_e2e']:6.0f}/s "
                      f"({r['bare_e2e']:.2f} s), EXISTS after {r['bare_exists']:.2f} s\n"
                      f"  bare      FETCH by 500 of the same messages  {n / r['bare_fetch']:6.0f}/s "
                      f"({r['bare_fetch']:.2f} s)\n"
                      f"  mailgate end to end / bare FETCH = {r['bare_fetch'] / r['e2e']:.2f} (expected >= 0.5)")
                if args.trickle:
                    t = args.trickle
                    print(f"trickle {t} x 10 KB APPENDed one at a time: APPEND {t / r['appended']:.0f}/s, "
                          f"end to end {t / r['trickle']:.0f}/s (the last out {r['trickle'] - r['appended']:.2f} s "
                          f"after the last APPEND)")


if __name__ == "__main__":
    main()
