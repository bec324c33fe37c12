"""Logging set-up, with a last line of defence: every secret the process has opened
is scrubbed from every log record, whatever code wrote it."""
from __future__ import annotations

import logging
import re
import threading
import weakref

REDACTED = "[REDACTED]"


class _Secrets:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < 4:  # too short to scrub without mangling ordinary words
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if not self._values:
                    return text
                alternatives = sorted(self._values, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(map(re.escape, alternatives)))
        return pattern.sub(REDACTED, text)


known_secrets = _Secrets()


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = known_secrets.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = known_secrets.scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = known_secrets.scrub(record.exc_text)
        return True


_installed: "weakref.WeakSet[logging.Handler]" = weakref.WeakSet()


def protect(handler: logging.Handler) -> None:
    if handler not in _installed:
        handler.addFilter(RedactingFilter())
        _installed.add(handler)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    protect(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
