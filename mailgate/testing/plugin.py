"""The `mailgate` pytest plugin (entry point pytest11): the real test servers and a
real mailgate server as fixtures, for mailgate's own suite and for driver plugins."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .fixtures import *  # noqa: F401,F403  (Dovecot, aiosmtpd, certificates, silent listener)
from .harness import ServerThread, database_urls, make_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mailgate-db", action="append", choices=ENGINES,
                     help="store engine(s) every test using mailgate_server runs against; "
                          "repeat for several (default: --mailgate-db-default)")
    parser.addoption("--mailgate-db-default", default="sqlite",
                     help="the engines, comma-separated, when no --mailgate-db is given (default: sqlite); "
                          "a project sets it in its pytest addopts")


ENGINES = ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mailgate_db_engine" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--mailgate-db") or \
            metafunc.config.getoption("--mailgate-db-default").split(",")
        unknown = set(chosen) - set(ENGINES)
        if unknown:
            raise pytest.UsageError(f"--mailgate-db-default: unknown engine(s) {', '.join(sorted(unknown))}")
        metafunc.parametrize("mailgate_db_engine", list(dict.fromkeys(chosen)))


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
