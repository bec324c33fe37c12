"""The SMTP pool's own event-loop client against smtplib, the library it bypasses.

    .venv/bin/python bench/smtp_client.py [--messages 2000] [--senders 8] [--size 10240]
                                          [--mode STARTTLS] [--rounds 3]

One aiosmtpd (AUTH, one account) in a process of its own, as in bench/send.py. In
this process, one asyncio loop and `--senders` concurrent senders share `--messages`
messages of `--size` bytes, each sender on a connection opened and logged in before
the clock starts (connect_smtp in a worker thread, as the server opens them):

* pool: SmtpPool.send, the mail transaction on the event loop (loopsock.LoopSocket);
* smtplib: smtplib.SMTP.sendmail on the same kind of connection, run in a pool of
  `--senders` worker threads (loop.run_in_executor): the library way, with blocking
  calls off the event loop.

Prints, per round, messages/s (first send to last reply) and this process's CPU time
per message (all its threads: what the server would spend), side by side, and the
ratios pool / smtplib; rounds alternate which goes first and the verdict is on the
median. aiosmtpd's own time is in neither figure.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailgate.drivers.transport import Endpoint, PasswordAuth, SmtpPool, connect_smtp
from mailgate.testing.servers.certs import TestCA
from rig import smtp_server

USER, PASSWORD = "bench@example.test", "bench-password"
TO = "customer@example.test"


def message(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, 0123456789, again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return b"From: " + USER.encode() + b"\r\nTo: " + TO.encode() + b"\r\nSubject: bench\r\n\r\n" + body + b"\r\n"


async def run_senders(senders: int, n: int, send) -> tuple[float, float]:
    """(messages/s, CPU seconds per message) of `n` sends by `senders` tasks; send(i) sends on sender i's connection."""
    left = iter(range(n))

    async def sender(i: int) -> None:
        for _ in left:
            await send(i)

    cpu, t = time.process_time(), time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(senders)))
    elapsed = time.perf_counter() - t
    return n / elapsed, (time.process_time() - cpu) / n


async def via_pool(endpoint: Endpoint, ca_pem: str, raw: bytes, senders: int, n: int) -> tuple[float, float]:
    pool = SmtpPool(max_idle_per_key=senders)
    auth = PasswordAuth(USER, PASSWORD)

    async def send(_: int) -> None:
        await pool.send("bench", endpoint, auth, timeout=10, ca_pem=ca_pem, mail_from=USER, recipients=[TO], raw=raw)

    await asyncio.gather(*(send(i) for i in range(senders)))  # warm-up: the connections open
    try:
        return await run_senders(senders, n, send)
    finally:
        pool.close()


async def via_smtplib(endpoint: Endpoint, ca_pem: str, raw: bytes, senders: int, n: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    auth = PasswordAuth(USER, PASSWORD)
    with ThreadPoolExecutor(senders, thread_name_prefix="smtplib") as threads:
        conns = await asyncio.gather(*(loop.run_in_executor(
            threads, lambda: connect_smtp(endpoint, auth, timeout=10, ca_pem=ca_pem)) for _ in range(senders)))

        async def send(i: int) -> None:
            await loop.run_in_executor(threads, conns[i].sendmail, USER, [TO], raw)

        try:
            return await run_senders(senders, n, send)
        finally:
            for c in conns:
                c.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--size", type=int, default=10240, help="body bytes")
    ap.add_argument("--mode", default="STARTTLS", choices=["NONE", "STARTTLS", "TLS"])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    raw = message(args.size)
    rates, cpus = [], []
    with tempfile.TemporaryDirectory() as d:
        ca = TestCA.create(Path(d) / "ca")
        with smtp_server(ca, {USER: PASSWORD}, args.mode) as (host, port):
            endpoint = Endpoint(host, port, args.mode)
            print(f"{args.messages} messages of {len(raw):,} B, {args.senders} senders, {args.mode}")
            print(f"{'round':>5}   {'pool msg/s':>10} {'CPU ms/msg':>10}   {'smtplib msg/s':>13} {'CPU ms/msg':>10}"
                  f"   {'rate ratio':>10} {'CPU ratio':>9}")
            for round_ in range(1, args.rounds + 1):
                sides = [("pool", via_pool), ("smtplib", via_smtplib)]
                if round_ % 2 == 0:
                    sides.reverse()
                got = {name: asyncio.run(fn(endpoint, ca.ca_pem, raw, args.senders, args.messages))
                       for name, fn in sides}
                (pr, pc), (sr, sc) = got["pool"], got["smtplib"]
                rates.append(pr / sr)
                cpus.append(pc / sc)
                print(f"{round_:5}   {pr:10.0f} {pc * 1000:10.3f}   {sr:13.0f} {sc * 1000:10.3f}"
                      f"   {pr / sr:10.2f} {pc / sc:9.2f}")
    print(f"median: pool / smtplib rate {statistics.median(rates):.2f}, CPU per message "
          f"{statistics.median(cpus):.2f} (below 1: the pool spends less)")


if __name__ == "__main__":
    main()
