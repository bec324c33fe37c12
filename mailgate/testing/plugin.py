"""The `mailgate` pytest plugin (entry point pytest11): the real test servers and a
real mailgate server as fixtures, for mailgate's own suite and for driver plugins."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .fixtures import *  # noqa: F401,F403  (Dovecot, aiosmtpd, certificates, silent listener)
from .harness import ServerThread, database_urls, make_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mailgate-db", action="append", choices=["sqlite", "postgresql"],
                     help="store engine(s) every test using mailgate_server runs against; "
                          "repeat for several (default: sqlite)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mailgate_db_engine" in metafunc.fixturenames:
        engines = list(dict.fromkeys(metafunc.config.getoption("--mailgate-db") or ["sqlite"]))
        metafunc.parametrize("mailgate_db_engine", engines)


@pytest.fixture
def mailgate_plugins() -> list[object]:
    """Extra driver plugins to register beside the installed ones. Override it to
    test a driver that is not installed as a distribution."""
    return []


@pytest.fixture
def mailgate_database_url(tmp_path: Path, mailgate_db_engine: str) -> Iterator[str]:
    """A fresh database on each engine chosen with --mailgate-db."""
    yield from database_urls(tmp_path, mailgate_db_engine)


@pytest.fixture
def mailgate_server(tmp_path: Path, mailgate_database_url: str,
                    mailgate_plugins: list[object]) -> Iterator[ServerThread]:
    """A running mailgate (grpc.aio on 127.0.0.1:0) with a fresh database."""
    with ServerThread(make_settings(tmp_path, mailgate_database_url), mailgate_plugins) as server:
        yield server
