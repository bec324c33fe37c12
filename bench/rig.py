"""What the benchmarks share: mailgate in a process of its own, percentiles."""
from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

from mailgate.testing.servers.certs import TestCA
from mailgate.testing.servers.silent import free_ports
from mailgate.testing.servers.smtpd import SmtpServer


@contextmanager
def mailgate_process(root: Path) -> Iterator[tuple[int, grpc.Channel]]:
    """`python -m mailgate serve` on SQLite in `root`, as deployed; yields (pid, channel)."""
    [port] = free_ports(1)
    env = dict(os.environ, MAILGATE_KEY_FILE=str(root / "mailgate.key"), MAILGATE_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}",
                             "--database-url", f"sqlite:///{root / 'mailgate.db'}"], env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield proc.pid, channel
    finally:
        channel.close()
        proc.terminate()
        proc.wait(30)


@contextmanager
def smtp_server(ca: TestCA, users: dict, mode: str = "STARTTLS") -> Iterator[tuple[str, int]]:
    """aiosmtpd in its own process (in ours it would compete for the GIL); yields (host, port)."""
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_smtp_serve, args=(ca, users, mode, child))
    proc.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(10)


def _smtp_serve(ca: TestCA, users: dict, mode: str, conn) -> None:
    with SmtpServer(mode, users, ca) as smtp:
        conn.send((smtp.host, smtp.port))
        conn.recv()  # until the parent says stop


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
