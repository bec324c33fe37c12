"""Held by every test of the suite: no password of the test accounts and no API
token secret reaches a log record (audit records included), at INFO and above.
Shared: `cli`, the `mailgate` command run in-process against the test's server."""
from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from mailgate.cli import main

from mailgate.testing.fixtures import MAIL_USERS

TOKEN_SECRET = re.compile(r"mgt_[0-9a-f]{32}_[A-Za-z0-9_-]{43}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "logs_secrets: the test puts secrets in log records itself, on purpose")


@pytest.fixture(autouse=True)
def _no_secret_in_a_log_record(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("logs_secrets"):
        return
    passwords = [p for p in MAIL_USERS.values() if len(p) >= 6]
    for record in caplog.records:
        text = record.getMessage() + "\n" + (record.exc_text or "")
        leaked = TOKEN_SECRET.search(text) or next((p for p in passwords if p in text), None)
        assert not leaked, f"a secret in a log record of {record.name}: {text[:300]!r}"


@pytest.fixture
def cli(mailgate_server, capsys, monkeypatch):
    """Runs `mailgate --server <test server> ARGS...` in-process: (exit, stdout, stderr)."""
    monkeypatch.setenv("MAILGATE_TOKEN_FILE", str(mailgate_server.settings.admin_token_file))

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--server", mailgate_server.address, *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run
