"""What authentication costs: a unary call, a stream opened and SendEmail's rate,
with an API token and with mutual TLS, against the same calls with authentication off.

    .venv/bin/python bench/auth.py [--calls 2000] [--messages 500] [--callers 8] [--rounds 5]

Starts four `mailgate serve` processes (SQLite each), as deployed:

* plain, MAILGATE_AUTH=off      and   plain, an API token
* TLS,   MAILGATE_AUTH=off      and   TLS with a client CA, a certificate's principal

and an aiosmtpd (no TLS) in a process of its own. Then, in one run, --rounds rounds
(the order of the servers turns each round, so a machine speeding up or slowing
down favours none), each timing on every server:

* unary: --calls sequential ListDrivers calls (no database, no driver: what is left
  is gRPC and admission), the mean time per call;
* stream: --calls / 10 streams opened, each with a first request the server refuses
  (the stream's admission, once per stream: messages on an open stream are not
  authenticated again, so a streamed message costs nothing more);
* SendEmail (plain servers only): --messages messages by --callers threads through
  one provider, messages/s as bench/send.py measures it.

Before the servers start, in this process, what the interceptor adds before a
handler runs (a cached token's lookup and hash check, the permission, naming the
caller; and for mutual TLS the certificate's principal) is timed over --admissions
calls against an empty coroutine: the added cost with no network or scheduling noise.

Prints each round and the medians: the added µs per unary call and per stream
(expected <= 50 µs), and SendEmail's rate with a token over the rate with
authentication off (expected >= 0.95).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc

from mailgate.server.access.guard import Guard
from mailgate.server.access.tls import Clients
from mailgate.server.access.tokens import Tokens
from mailgate.server.store.db import Database
from mailgate.testing.servers.certs import TestCA
from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc, provider_pb2
from mailgate.v1 import provider_service_pb2 as pb, provider_service_pb2_grpc
from rig import mailgate_process
from send import PASSWORD, USER, cpu_seconds, send_email, smtp_server, text_body

EXPECTED_US, EXPECTED_RATIO = 50.0, 0.95
CLIENTS = '[clients."bench-client"]\npermissions = ["*"]\n'


def admission(root: Path, n: int) -> dict[str, float]:
    """Seconds per admission, in-process: with a token, with a client certificate, and
    an empty coroutine (the loop's own cost, subtracted by the caller)."""
    db = Database(f"sqlite:///{root / 'admission.db'}")
    db.upgrade()
    tokens = Tokens(db)
    clients = Clients.load(str(root / "clients.toml"))
    method = "/mailgate.v1.ProviderService/ListDrivers"

    class Peer:  # what a call's context tells: its metadata, its TLS connection's certificate
        def __init__(self, metadata: list[tuple[str, str]]):
            self.metadata = metadata

        def invocation_metadata(self) -> list[tuple[str, str]]:
            return self.metadata

        @staticmethod
        def auth_context() -> dict[str, list[bytes]]:
            return {"x509_common_name": [b"bench-client"]}

    async def run() -> dict[str, float]:
        _, secret = await tokens.create("bench", ["*"], [], [], None)
        admission = Guard(tokens, clients).method(method)
        assert admission is not None
        by_token, by_certificate = Peer([("authorization", f"Bearer {secret}")]), Peer([])

        async def nothing(request: object, context: object) -> None:
            return None
        out = {}
        for name, admit, peer in (("empty", nothing, by_certificate), ("token", admission.admit, by_token),
                                  ("certificate", admission.admit, by_certificate)):
            await admit(None, peer)
            t = time.perf_counter()
            for _ in range(n):
                await admit(None, peer)
            out[name] = (time.perf_counter() - t) / n
        return out
    try:
        return asyncio.run(run())
    finally:
        db.close()


def per_call(pid: int, n: int, call) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) per call of `call`, made `n` times in a row."""
    call()
    cpu, t = cpu_seconds(pid), time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t) / n, (cpu_seconds(pid) - cpu) / n


def unary(channel: grpc.Channel):
    stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
    request = pb.ListDriversRequest()
    return lambda: stub.ListDrivers(request)


def stream(channel: grpc.Channel):
    stub = inbound_service_pb2_grpc.InboundServiceStub(channel)
    refused = ipb.StreamInboundMailRequest(campaign="bench", max_in_flight=-1)

    def one() -> None:
        try:
            for _ in stub.StreamInboundMail(iter([refused])):
                pass
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    return one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--admissions", type=int, default=50000)
    args = ap.parse_args()

    body = text_body(10240)
    counters = multiprocessing.get_context("fork").RawArray("d", 5)
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        root = Path(d)
        ca = TestCA.create(root / "ca")
        cert, key = ca.client_certificate("bench-client")
        (root / "clients.toml").write_text(CLIENTS)
        costs = [admission(root, args.admissions) for _ in range(args.rounds)]
        added = {kind: statistics.median(c[kind] - c["empty"] for c in costs) * 1e6 for kind in ("token", "certificate")}
        print("admission in-process, median of rounds: " + ", ".join(
            f"{kind} +{us:.1f} µs ({'ok' if us <= EXPECTED_US else 'ABOVE'})" for kind, us in added.items()), flush=True)
        host, port, smtpd_pid = stack.enter_context(smtp_server("NONE", ca, {USER: PASSWORD}, counters))
        trust = grpc.ssl_channel_credentials(ca.ca_pem.encode())
        mutual = grpc.ssl_channel_credentials(ca.ca_pem.encode(), key.read_bytes(), cert.read_bytes())
        tls = {"MAILGATE_TLS_CERT": str(ca.cert_path), "MAILGATE_TLS_KEY": str(ca.key_path)}
        setups = {
            "plain, auth off": ({"MAILGATE_AUTH": "off"}, None),
            "plain, token": ({}, None),
            "TLS, auth off": ({**tls, "MAILGATE_AUTH": "off"}, trust),
            "mutual TLS": ({**tls, "MAILGATE_TLS_CLIENT_CA": str(ca.ca_path),
                            "MAILGATE_CLIENTS_FILE": str(root / "clients.toml")}, mutual),
        }
        servers = {}
        for name, (env, credentials) in setups.items():
            directory = root / name.replace(", ", "-").replace(" ", "-")
            directory.mkdir()
            # With mutual TLS the certificate alone names the caller: no token on the channel.
            # Audit records go to a file of their own, as a deployment keeps them.
            env = {**env, "MAILGATE_AUDIT_FILE": str(directory / "audit.log")}
            servers[name] = stack.enter_context(mailgate_process(directory, env, credentials,
                                                                 token=name != "mutual TLS"))
        for name in ("plain, auth off", "plain, token"):
            pid, channel = servers[name]
            created = provider_service_pb2_grpc.ProviderServiceStub(channel).CreateProvider(pb.CreateProviderRequest(
                provider=provider_pb2.Provider(
                    display_name="Bench", type="smtp_imap", account=USER, from_name="Bench",
                    smtp_imap=provider_pb2.SmtpImapSettings(
                        password=PASSWORD, allow_plaintext_login=True,
                        smtp=provider_pb2.Endpoint(host=host, port=port, security=provider_pb2.SECURITY_NONE)))))
            servers[name] = (pid, channel, created.name)

        names = list(setups)
        keys = ("unary", "unary cpu", "stream", "stream cpu", "rate")
        figures: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in names}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                pid, channel, *provider = servers[name]
                f = figures[name]
                for kind, make, n in (("unary", unary, args.calls), ("stream", stream, args.calls // 10)):
                    wall, cpu = per_call(pid, n, make(channel))
                    f[kind].append(wall)
                    f[f"{kind} cpu"].append(cpu)
                if provider:
                    f["rate"].append(send_email(
                        channel, provider[0], body, counters, args.messages, args.callers,
                        {"client": None, "aiosmtpd": smtpd_pid, "mailgate": pid}, None)["rate"])
                print(f"round {round_ + 1}  {name:16} unary {f['unary'][-1] * 1e6:6.0f} µs "
                      f"(server CPU {f['unary cpu'][-1] * 1e6:4.0f})   stream {f['stream'][-1] * 1e6:6.0f} µs "
                      f"(server CPU {f['stream cpu'][-1] * 1e6:4.0f})"
                      + (f"   SendEmail {f['rate'][-1]:5.0f} msg/s" if provider else ""), flush=True)

    med = {n: {k: statistics.median(v) for k, v in f.items() if v} for n, f in figures.items()}
    print()
    print(f"medians of {args.rounds} rounds (µs per call; server CPU in brackets)")
    for n in names:
        m = med[n]
        line = (f"  {n:16} unary {m['unary'] * 1e6:6.0f} ({m['unary cpu'] * 1e6:4.0f})   "
                f"stream {m['stream'] * 1e6:6.0f} ({m['stream cpu'] * 1e6:4.0f})")
        if "rate" in m:
            line += f"   SendEmail {m['rate']:5.0f} msg/s"
        print(line)
    print()
    print("added by authentication, median of the rounds' differences (expected <= "
          f"{EXPECTED_US:.0f} µs); server CPU decides, wall time moves with the machine")
    for on, off in (("plain, token", "plain, auth off"), ("mutual TLS", "TLS, auth off")):
        for kind in ("unary", "stream"):
            wall = statistics.median(a - b for a, b in zip(figures[on][kind], figures[off][kind])) * 1e6
            cpu = statistics.median(a - b for a, b in zip(figures[on][f"{kind} cpu"],
                                                          figures[off][f"{kind} cpu"])) * 1e6
            verdict = "ok" if cpu <= EXPECTED_US else "ABOVE"
            print(f"  {on} over {off}, {kind}: server CPU {cpu:+.0f} µs, wall {wall:+.0f} µs: {verdict}")
    ratios = [a / b for a, b in zip(figures["plain, token"]["rate"], figures["plain, auth off"]["rate"])]
    ratio = statistics.median(ratios)
    print(f"SendEmail with a token / auth off: {ratio:.3f} (median of rounds; expected >= {EXPECTED_RATIO}): "
          + ("ok" if ratio >= EXPECTED_RATIO else "BELOW"))


if __name__ == "__main__":
    main()
