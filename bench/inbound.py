"""Receiving: latency, start-up, memory per watched mailbox and burst throughput.

    .venv/bin/python bench/inbound.py [--sizes 1,100,1000] [--burst 2000] [--samples 50]

Starts a private Dovecot (IMAP without TLS, security NONE, on its plain port; LMTP for
delivery), an aiosmtpd (mode NONE, only used by the creation check) and, for every size N,
a fresh `mailgate serve` (SQLite) in a process of its own. For each N, in one run:

* start-up: one message is delivered (LMTP) to each of the N mailboxes *before* the
  providers exist; then N smtp_imap providers (receive_emails, campaign "bench") are
  created over gRPC by 8 concurrent callers. A new watcher fetches its mailbox from UID 1,
  so "all watched" is the time from the first CreateProvider until all N of those
  messages came out of StreamInboundMail (connect, login, EXAMINE, first FETCH for all N).
* memory: VmRSS of the mailgate process after that, minus VmRSS with 0 providers (a
  consumer stream already open), divided by N.
* latency: --samples messages, one at a time, to up to --samples of the N mailboxes
  (round robin): LMTP deliver start ->
  arrival on the stream; against a bare imapclient session on another mailbox of the same
  Dovecot (IDLE, deliver, wait for EXISTS, FETCH BODY.PEEK[]).
Then, in another fresh mailgate with one provider, a burst of --burst 10 KB messages is
APPENDed to its mailbox and timed until all came out of the stream, against a bare
imapclient FETCH BODY.PEEK[] of the same messages in batches of 500.
"""
from __future__ import annotations

import argparse
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
from rig import mailgate_process, percentile, smtp_server

PASSWORD = "pw"
BARE = "bare@example.test"
BURST = "burst@example.test"


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
                password=PASSWORD, ca_certificates_pem=ca.ca_pem,
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
    return dict(n=n, created=created, all_watched=all_watched, rss0=rss0, rss1=rss1, lat=lat)


def run_burst(count: int, dovecot: Dovecot, smtp, ca: TestCA, root: Path) -> tuple[float, float, float]:
    (root / "burst").mkdir()
    with mailgate_process(root / "burst") as (_, channel):
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        stream = Stream(type("Server", (), {"channel": channel})())
        dovecot.deliver(BURST, mail(BURST, "burst seed"))
        create_providers(stub, [BURST], dovecot, smtp, ca)
        stream.wait(1, timeout=30)
        msgs = [mail(BURST, f"burst {i}", 10_000) for i in range(count)]
        c = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=30)
        c.login(BURST, PASSWORD)
        t = time.monotonic()
        for m in msgs:
            c.append("INBOX", m)
        appended = time.monotonic() - t
        arrivals = stream.wait(count, timeout=120 + count * 0.05)
        end_to_end = max(a for a, _ in arrivals) - t
        stream.close()
    c.select_folder("INBOX", readonly=True)
    uids = c.search()[1:]  # without the seed
    t = time.monotonic()
    for i in range(0, len(uids), 500):
        c.fetch(uids[i:i + 500], ["BODY.PEEK[]"])
    bare = time.monotonic() - t
    c.logout()
    return appended, end_to_end, bare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    users = {u: PASSWORD for n in sizes for u in (f"n{n}-u{i}@example.test" for i in range(n))}
    users.update({BARE: PASSWORD, BURST: PASSWORD})
    # Each imap process takes an inotify instance (128 per user here) and Dovecot's
    # process_limit is 4 in this mode, so the clients per process must cover the largest N.
    client_limit = max(50, (max(sizes) + 100) // 4)
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
                      f" = {(r['rss1'] - r['rss0']) / n:.0f} KB/mailbox", flush=True)
            if args.burst:
                appended, e2e, bare_fetch = run_burst(args.burst, dovecot, smtp, ca, root)
                print(f"burst {args.burst} x 10 KB to one mailbox: APPEND {args.burst / appended:.0f}/s "
                      f"({appended:.2f} s), end to end (APPEND start -> last on stream) "
                      f"{args.burst / e2e:.0f}/s ({e2e:.2f} s); bare FETCH by 500: "
                      f"{args.burst / bare_fetch:.0f}/s ({bare_fetch:.2f} s)")


if __name__ == "__main__":
    main()
