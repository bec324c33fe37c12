"""What the benchmarks share: mailgate in a process of its own, percentiles."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

from mailgate.testing.servers.silent import free_ports


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


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
