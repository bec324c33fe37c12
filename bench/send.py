"""SendEmail's throughput against a bare smtplib loop into the same aiosmtpd.

    .venv/bin/python bench/send.py [--messages 1000] [--callers 8] [--size 10240]
                                   [--modes NONE,STARTTLS] [--rounds 3] [--py-spy PREFIX]

Starts `mailgate serve` (its own SQLite database and key file) and, for each mode,
an aiosmtpd (AUTH PLAIN/LOGIN, one account) in a process of its own, as in a
deployment. Then, in one run, per mode, --rounds rounds of both of these (which goes
first alternates), each round giving a ratio; the verdict is on their median, since
on a shared 2-core machine the speed of either side moves by up to 2x from one
second to the next:

* bare loop: one smtplib connection (STARTTLS if the mode says so, AUTH once),
  `sendmail` of the same message `--messages` times, then QUIT;
* SendEmail: `--callers` threads sharing one gRPC channel send `--messages`
  messages (distinct subjects, a `--size`-byte text body) through one provider.

Messages/s is messages / (time from the first call to the moment aiosmtpd
accepted the last message); aiosmtpd stamps that moment itself (perf_counter is
CLOCK_MONOTONIC, the same clock in every process), so nobody polls. The bare loop's
time includes its connect and AUTH; SendEmail gets a warm-up of one message per
caller first (gRPC channel, the provider's first SMTP connections). Prints the
rates, SendEmail's per-call latency p50/p99, the ratio (expected >= 0.7), how
many SMTP logins each side made (the pool's reconnections show there) and the CPU
time per message of mailgate, aiosmtpd and this client (from /proc, all threads), and
how busy the machine's cores were ("cores": near 100 %, the run was bound by CPU).

aiosmtpd keeps only counters (messages, bytes, logins), not the messages.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import grpc

from mailgate.server.outbound import compose
from mailgate.testing.servers.certs import TestCA
from mailgate.testing.servers.smtpd import SmtpServer
from rig import MachineCpu, mailgate_process, percentile
from mailgate.v1 import mail_service_pb2 as mpb, mail_service_pb2_grpc, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb, provider_service_pb2_grpc

USER, PASSWORD = "bench@example.test", "bench-password"
TO = "customer@example.test"
EXPECTED = 0.7
SECURITY = {"NONE": provider_pb2.SECURITY_NONE, "STARTTLS": provider_pb2.SECURITY_STARTTLS}

# Slots of the counters shared with the aiosmtpd process.
COUNT, BYTES, LOGINS, TARGET, REACHED = range(5)


def text_body(size: int) -> str:
    """`size` bytes of ASCII text in lines of 76 characters (quoted-printable leaves it as is)."""
    line = ("The quick brown fox jumps over the lazy dog, 0123456789, again and again. " * 2)[:75] + "\n"
    return (line * (size // len(line) + 1))[:size]


@contextmanager
def smtp_server(mode: str, ca: TestCA, users: dict, counters) -> Iterator[tuple[str, int]]:
    """aiosmtpd in its own process: in ours it would compete for the GIL."""
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_smtp_serve_with,
                                                       args=(mode, ca, users, counters, child))
    proc.start()
    try:
        host, port = parent.recv()
        yield host, port, proc.pid
    finally:
        parent.send("stop")
        proc.join(10)


def _smtp_serve_with(mode: str, ca: TestCA, users: dict, counters, conn) -> None:
    with SmtpServer(mode, users, ca) as smtp:
        handler = smtp.handler
        handle_data, authenticate = handler.handle_DATA, handler.authenticate

        async def counting_data(server, session, envelope) -> str:
            reply = await handle_data(server, session, envelope)
            if reply.startswith("250"):
                handler.messages.clear()  # count, don't keep
                counters[BYTES] += len(envelope.original_content)
                counters[COUNT] += 1
                if counters[COUNT] == counters[TARGET]:
                    counters[REACHED] = time.perf_counter()
            return reply

        def counting_auth(*args):
            result = authenticate(*args)
            if result.success:
                counters[LOGINS] += 1
            return result

        # Instance attributes: aiosmtpd looks both up for every new connection.
        handler.handle_DATA, handler.authenticate = counting_data, counting_auth
        conn.send((smtp.host, smtp.port))
        conn.recv()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads); this one's for None."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    """Resets the counters for `n` messages; afterwards: rate, logins, bytes per message,
    CPU seconds per message of each process in `pids` (name -> pid, None: this one)."""

    def __init__(self, counters, n: int, pids: dict[str, int | None]):
        self.counters, self.n, self.pids = counters, n, pids
        for slot in (COUNT, BYTES, LOGINS, REACHED):
            counters[slot] = 0
        counters[TARGET] = n
        self.start = 0.0
        self.cpu: dict[str, float] = {}

    def begin(self) -> None:
        self.cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine = MachineCpu()
        self.start = time.perf_counter()

    def finish(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not self.counters[REACHED]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"aiosmtpd got {int(self.counters[COUNT])} of {self.n} messages")
            time.sleep(0.01)
        elapsed = self.counters[REACHED] - self.start
        cpu = {name: (cpu_seconds(pid) - self.cpu[name]) / self.n for name, pid in self.pids.items()}
        busy = self.machine.busy()
        return {"cpu": cpu, "busy": busy, "rate": self.n / elapsed, "seconds": elapsed, "logins": int(self.counters[LOGINS]),
                "avg_bytes": self.counters[BYTES] / max(self.counters[COUNT], 1)}


def bare_loop(host: str, port: int, mode: str, ctx, raw: bytes, counters, n: int,
              pids: dict[str, int | None]) -> dict:
    phase = Phase(counters, n, pids)
    phase.begin()
    with smtplib.SMTP(host, port, local_hostname="[127.0.0.1]", timeout=10) as s:
        if mode == "STARTTLS":
            s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        for _ in range(n):
            s.sendmail(USER, [TO], raw)
    return phase.finish()


def send_email(channel: grpc.Channel, provider: str, body: str, counters, n: int, callers: int,
               pids: dict[str, int | None], profile: tuple[str, int] | None) -> dict:
    stub = mail_service_pb2_grpc.MailServiceStub(channel)
    Out = mpb.OutboundMessage

    def request(i: int) -> mpb.SendEmailRequest:
        return mpb.SendEmailRequest(provider=provider, to=[TO], subject=f"Bench message {i}", text_body=body)

    # Warm-up, not counted: one message per caller, concurrently.
    warm = [threading.Thread(target=stub.SendEmail, args=(request(-1 - i),)) for i in range(callers)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    time.sleep(0.2)

    spy = start_py_spy(*profile) if profile else None
    phase = Phase(counters, n, pids)
    lock = threading.Lock()
    next_i = iter(range(n))
    latencies: list[float] = []
    states: dict[int, int] = {}
    failures: list[BaseException] = []
    go = threading.Barrier(callers + 1)

    def caller() -> None:
        mine: list[float] = []
        go.wait()
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    break
                t = time.perf_counter()
                r = stub.SendEmail(request(i), timeout=60)
                mine.append(time.perf_counter() - t)
                if r.state != Out.STATE_SENT:
                    with lock:
                        states[r.state] = states.get(r.state, 0) + 1
        except BaseException as e:  # reported below
            failures.append(e)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    go.wait()
    phase.begin()
    for t in threads:
        t.join()
    calls_done = time.perf_counter() - phase.start
    if spy:
        stop_py_spy(spy)
    if failures:
        raise failures[0]
    if states:
        print(f"  warning: calls that did not return SENT: "
              f"{ {Out.State.Name(k): v for k, v in states.items()} }")
    out = phase.finish()
    out.update(p50=statistics.median(latencies), p99=percentile(latencies, 99), calls_seconds=calls_done)
    return out


def start_py_spy(prefix: str, pid: int) -> subprocess.Popen:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = {"json": "speedscope", "txt": "raw"}.get(prefix.rpartition(".")[2], "flamegraph")
    # --gil: only the thread holding the GIL is sampled, i.e. where the server's Python CPU goes.
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads",
                             "--gil", "-o", prefix, "--format", fmt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the measurement starts
    return proc


def stop_py_spy(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--size", type=int, default=10240, help="text body bytes")
    ap.add_argument("--modes", default="NONE,STARTTLS", help="comma-separated: NONE, STARTTLS")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (bare loop, SendEmail) per mode; the ratio is their median")
    ap.add_argument("--py-spy", metavar="PREFIX",
                    help="sample the server's GIL holder with py-spy during each SendEmail phase into PREFIX-MODE.svg "
                         "(or .json: speedscope, .txt: collapsed stacks)")
    args = ap.parse_args()
    modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in SECURITY]:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(SECURITY)}")

    body = text_body(args.size)
    raw = compose.compose(compose.Draft(to=(TO,), subject="Bench message", text_body=body),
                          compose.Sender(USER, "Bench"), message_id=compose.new_message_id(USER),
                          date=datetime.now(timezone.utc))
    fork = multiprocessing.get_context("fork")
    counters = {mode: fork.RawArray("d", 5) for mode in modes}
    results: dict[str, list[tuple[dict, dict]]] = {}
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        root = Path(d)
        ca = TestCA.create(root / "ca")
        users = {USER: PASSWORD}
        tls = ca.client_context()
        # Every aiosmtpd forks before this process has a gRPC channel (no fork under gRPC's threads).
        servers = {mode: stack.enter_context(smtp_server(mode, ca, users, counters[mode])) for mode in modes}
        pid, channel = stack.enter_context(mailgate_process(root))
        providers = provider_service_pb2_grpc.ProviderServiceStub(channel)
        for mode in modes:
            host, port, smtpd_pid = servers[mode]
            created = providers.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                display_name=f"Bench {mode}", type="smtp_imap", account=USER, from_name="Bench",
                smtp_imap=provider_pb2.SmtpImapSettings(
                    password=PASSWORD, ca_certificates_pem=ca.ca_pem, allow_plaintext_login=mode == "NONE",
                    smtp=provider_pb2.Endpoint(host=host, port=port, security=SECURITY[mode])))))
            results[mode] = []
            for round_ in range(1, args.rounds + 1):
                def bare() -> dict:
                    return bare_loop(host, port, mode, tls, raw, counters[mode], args.messages,
                                     {"client": None, "aiosmtpd": smtpd_pid})

                def sent() -> dict:
                    profile = None
                    if args.py_spy and round_ == 1:
                        prefix, dot, ext = args.py_spy.rpartition(".")
                        profile = (f"{prefix}-{mode}.{ext}" if dot else f"{args.py_spy}-{mode}.svg", pid)
                    return send_email(channel, created.name, body, counters[mode], args.messages, args.callers,
                                      {"client": None, "aiosmtpd": smtpd_pid, "mailgate": pid}, profile)
                # Which goes first alternates: a machine that speeds up or slows down
                # during a round favours neither side.
                print(f"{mode}: round {round_}: bare smtplib loop and SendEmail ({args.callers} callers) ...",
                      flush=True)
                if round_ % 2:
                    b = bare()
                    results[mode].append((b, sent()))
                else:
                    r = sent()
                    results[mode].append((bare(), r))

    ms = lambda x: f"{x * 1000:5.1f} ms"  # noqa: E731
    cpu = lambda r, k: f"{r['cpu'][k] * 1000:6.2f}" if k in r["cpu"] else f"{'-':>6}"  # noqa: E731
    print()
    print(f"{args.messages} messages, text body {args.size:,} B, {args.callers} SendEmail callers, one provider")
    print(f"{'':29}{'':36}CPU ms per message")
    print(f"{'mode':9} {'rd':>2} {'path':13} {'msg/s':>6} {'seconds':>7} {'logins':>6} {'B/msg':>6}   "
          f"{'mailgate':>8} {'smtpd':>6} {'client':>6} {'cores':>5}   SendEmail latency p50 / p99")
    for mode, rounds in results.items():
        for round_, (bare, sent) in enumerate(rounds, 1):
            for path, r in (("bare smtplib", bare), ("SendEmail", sent)):
                line = (f"{mode:9} {round_:>2} {path:13} {r['rate']:6.0f} {r['seconds']:7.2f} {r['logins']:6d} "
                        f"{r['avg_bytes']:6.0f}   {cpu(r, 'mailgate'):>8} {cpu(r, 'aiosmtpd')} {cpu(r, 'client')} "
                        f"{r['busy'] * 100:4.0f}%")
                if "p50" in r:
                    line += f"   {ms(r['p50'])} / {ms(r['p99'])}"
                print(line)
    print()
    for mode, rounds in results.items():
        ratios = [sent["rate"] / bare["rate"] for bare, sent in rounds]
        ratio = statistics.median(ratios)
        verdict = "ok" if ratio >= EXPECTED else "BELOW"
        print(f"{mode:9} SendEmail / bare loop = {ratio:.2f} median of {len(ratios)} round(s) "
              f"({' '.join(f'{r:.2f}' for r in ratios)})  (expected >= {EXPECTED}: {verdict})")
    print("For scale (issue): bare loop ~630 msg/s plain, ~420 STARTTLS; reconnecting per message ~200 and ~85.")

if __name__ == "__main__":
    main()
