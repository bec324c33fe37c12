"""The send path in a server, as built and without each of its speed measures, in one
process so that the machine's moods fall on all of them alike.

    .venv/bin/python bench/send_path.py [--postgresql] [--messages 2000] [--senders 8] [--rounds 4]

A real server (its own SQLite database; --postgresql: a throw-away schema on the local
PostgreSQL) and aiosmtpd in a process of its own (security NONE). `--senders`
concurrent Outbox.send calls on the server's loop (gRPC left out) send `--messages`
messages of 10 KB per round; rounds take the variants in turn, the order reversed
every other time:

* as built;
* Core statements: the hot statements executed by SQLAlchemy Core's
  Connection.execute instead of fast.Prepared (what fast.py bypasses);
* after the commit: the first attempt starts once the message is committed, instead
  of overlapping the commit with its SMTP exchange (the smtp_imap driver's
  Capabilities.handover turned off, as for a driver without it).

Per round: messages/s, this process's CPU time per message, and writes per commit of
the outbox's group commit; then the medians, and each variant's against as built.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from mailgate.server.outbound.compose import Draft
from mailgate.server.outbound.store import OutState
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.testing.servers.certs import TestCA
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb
from rig import smtp_server
from store import database_url, plain_core

USER, PASSWORD = "bench@example.test", "bench-password"
BODY = ((("The quick brown fox jumps over the lazy dog, 0123456789, again and again. " * 2)[:75] + "\n") * 140)[:10240]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgresql", action="store_true", help="a throw-away schema on the local PostgreSQL")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as d, database_url(args.postgresql, Path(d)) as url:
        ca = TestCA.create(Path(d) / "ca")
        with smtp_server(ca, {USER: PASSWORD}, "NONE") as (host, port), \
                ServerThread(make_settings(Path(d), url)) as server:
            created = server.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                display_name="Bench", type="smtp_imap", account=USER, from_name="Bench",
                smtp_imap=provider_pb2.SmtpImapSettings(password=PASSWORD, ca_certificates_pem=ca.ca_pem,
                                                        allow_plaintext_login=True, smtp=(
                    provider_pb2.Endpoint(host=host, port=port, security=provider_pb2.SECURITY_NONE))))))
            provider_id = created.name.removeprefix("providers/")
            outbox = server.app.outbox
            driver = server.app.drivers.get("smtp_imap")
            built = driver.capabilities

            @contextmanager
            def after_commit() -> Iterator[None]:
                driver.capabilities = replace(built, handover=False)
                try:
                    yield
                finally:
                    driver.capabilities = built

            make = {"as built": nullcontext, "Core statements": plain_core, "after the commit": after_commit}

            async def send(n: int) -> None:
                left = iter(range(n))

                async def sender() -> None:
                    for i in left:
                        m = await outbox.send(provider_id, Draft(to=("customer@example.test",), subject=f"m {i}",
                                                                 text_body=BODY))
                        assert m.state is OutState.SENT, m

                await asyncio.gather(*(sender() for _ in range(args.senders)))

            def measure() -> tuple[float, float, float]:
                writes, batches = outbox._write.writes, outbox._write.batches
                cpu, t = time.process_time(), time.perf_counter()
                server.call(send(args.messages), timeout=600)
                rate, cpu = args.messages / (time.perf_counter() - t), (time.process_time() - cpu) / args.messages
                return rate, cpu, (outbox._write.writes - writes) / max(outbox._write.batches - batches, 1)

            server.call(send(args.senders * 4))  # warm-up: connections, caches
            print(f"{args.messages} messages of 10 KB a round, {args.senders} concurrent Outbox.send, "
                  f"{server.app.db.engine.dialect.name}")
            print(f"{'round':>5} {'variant':17} {'msg/s':>6} {'CPU ms/msg':>10} {'writes/commit':>13}")
            got: dict[str, list[tuple[float, float, float]]] = {name: [] for name in make}
            for round_ in range(1, args.rounds + 1):
                for name in (list(make) if round_ % 2 else list(make)[::-1]):
                    with make[name]():
                        got[name].append(measure())
                    rate, cpu, wpc = got[name][-1]
                    print(f"{round_:5} {name:17} {rate:6.0f} {cpu * 1000:10.3f} {wpc:13.2f}", flush=True)
            medians = {name: [statistics.median(x[i] for x in runs) for i in range(3)] for name, runs in got.items()}
            base_rate, base_cpu, _ = medians["as built"]
            print()
            for name, (rate, cpu, wpc) in medians.items():
                print(f"median {name:17} {rate:6.0f} msg/s  {cpu * 1000:.3f} ms/msg  {wpc:.2f} writes/commit"
                      f"   against as built: rate {rate / base_rate:.2f}, CPU per message {cpu / base_cpu:.2f}")


if __name__ == "__main__":
    main()
