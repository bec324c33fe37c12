"""Progress for people: one status line on stderr, redrawn in place, only when
stderr is a terminal. Scripts (stderr a pipe or a file) never see it, and stdout,
where the results and --json go, never carries it."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

SPIN = "|/-\\"
DELAY = 0.3  # seconds before a wait shows itself: a quick answer flashes nothing
TICK = 0.1


class StatusLine:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = False
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        if not self.live:
            return
        with self._lock:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = True

    def clear(self) -> None:
        """Before anything else is written to the terminal."""
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False


@contextmanager
def waiting(what: str, stream: TextIO | None = None) -> Iterator[None]:
    """`what… 2.4 s` with a spinner while the block waits (a check on a slow
    server), cleared when it ends."""
    line = StatusLine(stream)
    if not line.live:
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        if done.wait(DELAY):
            return
        n = 0
        while not done.is_set():
            line.show(f"{SPIN[n % len(SPIN)]} {what}… {time.monotonic() - started:.1f} s")
            n += 1
            done.wait(TICK)

    thread = threading.Thread(target=spin, name="mailgate-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        line.clear()
