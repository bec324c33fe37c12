"""What the benchmarks share: mailgate in a process of its own, percentiles."""
from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

from mailgate.testing.servers.certs import TestCA
from mailgate.testing.harness import LOOPBACK, connect_process
from mailgate.testing.servers.silent import free_ports
from mailgate.testing.servers.smtpd import SmtpServer


@contextmanager
def mailgate_process(root: Path, env: dict[str, str] | None = None, credentials: grpc.ChannelCredentials | None = None,
                     token: bool = True) -> Iterator[tuple[int, grpc.Channel]]:
    """`python -m mailgate serve` on SQLite in `root`, as deployed, with `env` added
    (TLS needs the channel's `credentials`); yields (pid, channel), the channel
    presenting the administrator token unless not `token`."""
    [port] = free_ports(1)
    env = dict(os.environ, MAILGATE_KEY_FILE=str(root / "mailgate.key"), MAILGATE_LOG_LEVEL="WARNING",
               MAILGATE_NETWORK_ALLOW=LOOPBACK, **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}",
                             "--database-url", f"sqlite:///{root / 'mailgate.db'}"], env=env)
    channel = None
    try:
        channel = connect_process(f"127.0.0.1:{port}", root / "mailgate.token" if token else None,
                                  credentials=credentials)
        yield proc.pid, channel
    finally:
        if channel:
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


class MachineCpu:
    """How busy the whole machine's cores were: every process counts (mailgate, the
    mail servers, the bench's own clients), so a figure near 1.0 says the run was
    bound by CPU, not by waiting. /proc/stat is read every 50 ms from creation
    until the first busy()."""

    def __init__(self) -> None:
        self._samples = [(time.monotonic(), *self._read())]
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])  # busy, all (steal included: taken from us)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._samples.append((time.monotonic(), *self._read()))

    def busy(self, since: float | None = None, until: float | None = None) -> float:
        """The busy fraction of all cores between two monotonic times (default: from
        creation until now), to the nearest 50 ms sample; stops the sampling."""
        self._stop.set()
        samples = self._samples + [(time.monotonic(), *self._read())]
        before = [x for x in samples if since is not None and x[0] <= since]
        after = [x for x in samples if until is not None and x[0] >= until]
        first, last = (before or samples)[-1 if before else 0], (after or samples)[0 if after else -1]
        return (last[1] - first[1]) / max(last[2] - first[2], 1)
