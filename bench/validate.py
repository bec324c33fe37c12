"""ValidateProvider's wall time against bare logins to the same local servers.

    .venv/bin/python bench/validate.py [--runs 50]

Starts a private Dovecot, an aiosmtpd (STARTTLS + AUTH) and `mailgate serve` (SQLite),
each in a process of its own as in a deployment, and a stored smtp_imap provider
(SMTP STARTTLS + IMAPS). Then, in one run,
times a bare smtplib login (connect, STARTTLS, AUTH, QUIT), a bare imapclient login
(implicit TLS, LOGIN, LOGOUT) and ValidateProvider on the provider, and prints the
medians and p90s, and ValidateProvider against the maximum and the sum of the bare
logins. The checks run concurrently, so the expectation is at most 1.2x the maximum.
"""
from __future__ import annotations

import argparse
import smtplib
import statistics
import tempfile
import time
from pathlib import Path

import imapclient

from mailgate.testing.servers.certs import TestCA
from mailgate.testing.servers.dovecot import Dovecot
from rig import mailgate_process, percentile, smtp_server
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc

USER, PASSWORD = "bench@example.test", "bench-password"


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up: imports, TLS session set-up, first-connection costs
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        ca = TestCA.create(root / "ca")
        users = {USER: PASSWORD}
        with Dovecot(root / "dovecot", users, ca) as dovecot, smtp_server(ca, users) as (smtp_host, smtp_port), \
                mailgate_process(root) as (_, channel):
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            ctx = ca.client_context()

            def bare_smtp() -> None:
                with smtplib.SMTP(smtp_host, smtp_port, timeout=10) as s:
                    s.starttls(context=ctx)
                    s.login(USER, PASSWORD)

            def bare_imap() -> None:
                c = imapclient.IMAPClient(dovecot.host, dovecot.imaps_port, ssl=True, ssl_context=ctx, timeout=10)
                c.login(USER, PASSWORD)
                c.logout()

            created = stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
                display_name="Bench", type="smtp_imap", account=USER, receive_emails=True,
                smtp_imap=provider_pb2.SmtpImapSettings(
                    password=PASSWORD, ca_certificates_pem=ca.ca_pem,
                    smtp=provider_pb2.Endpoint(host=smtp_host, port=smtp_port,
                                               security=provider_pb2.SECURITY_STARTTLS),
                    inbound=provider_pb2.Endpoint(host=dovecot.host, port=dovecot.imaps_port,
                                                  security=provider_pb2.SECURITY_TLS)))))

            def validate() -> None:
                r = stub.ValidateProvider(pb.ValidateProviderRequest(name=created.name))
                assert r.report.ok, r.report

            # Interleave the three so drift on the machine hits them alike.
            s_t, i_t, v_t = [], [], []
            for _ in range(args.runs // 10 or 1):
                s_t += timed(bare_smtp, 10)
                i_t += timed(bare_imap, 10)
                v_t += timed(validate, 10)

    ms = lambda x: f"{x * 1000:7.1f} ms"  # noqa: E731
    smtp_p50, imap_p50, val_p50 = (statistics.median(x) for x in (s_t, i_t, v_t))
    print(f"runs per measurement: {len(v_t)}")
    print(f"bare smtplib STARTTLS AUTH   p50 {ms(smtp_p50)}   p90 {ms(percentile(s_t, 90))}")
    print(f"bare imapclient IMAPS login  p50 {ms(imap_p50)}   p90 {ms(percentile(i_t, 90))}")
    print(f"ValidateProvider (both)      p50 {ms(val_p50)}   p90 {ms(percentile(v_t, 90))}")
    print(f"max of bare p50s {ms(max(smtp_p50, imap_p50))}   sum {ms(smtp_p50 + imap_p50)}")
    print(f"ValidateProvider / max = {val_p50 / max(smtp_p50, imap_p50):.2f}  (expected <= 1.2)")
    print(f"ValidateProvider / sum = {val_p50 / (smtp_p50 + imap_p50):.2f}  (concurrent checks: well under 1)")


if __name__ == "__main__":
    main()
