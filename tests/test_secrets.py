"""Secrets are sealed at rest, never returned, never logged."""
from __future__ import annotations

import logging
import os
import stat

import pytest
from google.protobuf import struct_pb2
from sqlalchemy import create_engine, text

import mailgate_echo_driver
from mailgate.server.secrets import ENV_KEY, SecretBox, SecretKeyError
from mailgate.server.store.db import Database
from mailgate.server.store.models import ProviderSecretRow
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb

SECRET = "correct-horse-battery-staple-4711"


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


def _echo(key: str) -> provider_pb2.Provider:
    s = struct_pb2.Struct()
    s.update({"greeting": "hi", "api_key": key})
    return provider_pb2.Provider(display_name="Vault", type="echo", account="v@example.test",
                                 plugin_settings=s)


def _everything_stored(tmp_path, database_url: str) -> bytes:
    """The database as bytes: SQLite's files, or every PostgreSQL row as text."""
    if database_url.startswith("sqlite"):
        return b"".join(p.read_bytes() for p in tmp_path.glob("mailgate.db*"))
    engine = create_engine(database_url)
    with engine.connect() as c:
        tables = c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars()
        rows = [r for t in list(tables) for r in c.execute(text(f'SELECT t::text FROM "{t}" t')).scalars()]
    engine.dispose()
    return "\n".join(rows).encode()


def test_database_holds_no_plaintext_and_the_key_file_is_private(
        tmp_path, mailgate_server, mailgate_database_url, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(mailgate_echo_driver, "ACCEPTED_KEY", SECRET)
    created = mailgate_server.stub.CreateProvider(pb.CreateProviderRequest(provider=_echo(SECRET)))
    mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(name=created.name))
    mailgate_server.stub.ValidateProvider(pb.ValidateProviderRequest(provider=_echo(SECRET + "x")))
    mailgate_server.stop()  # SQLite: checkpoint the WAL into the database file
    stored = _everything_stored(tmp_path, mailgate_database_url)
    assert b"Vault" in stored  # we are looking at what the server wrote
    assert SECRET.encode() not in stored and SECRET.encode().hex().encode() not in stored
    key_file = tmp_path / "mailgate.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_secret_columns_refuse_plaintext(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.upgrade()
    db.engine.dispose()
    with pytest.raises(Exception, match="Sealed values only"):
        with db.engine.begin() as c:
            c.execute(ProviderSecretRow.__table__.insert().values(
                provider_id="p", name="password", value=b"plaintext"))
    db.close()


def test_sealed_value_is_bound_to_key_and_owner(tmp_path):
    box = SecretBox(os.urandom(32))
    sealed = box.seal(SECRET, "provider:1:password")
    assert SECRET.encode() not in sealed.data
    assert box.open(sealed, "provider:1:password") == SECRET
    with pytest.raises(Exception):  # copied onto another provider's row, it does not open
        box.open(sealed, "provider:2:password")
    with pytest.raises(SecretKeyError, match="another key"):
        SecretBox(os.urandom(32)).open(sealed, "provider:1:password")


def test_key_from_environment_wins_and_bad_keys_are_explained(tmp_path, monkeypatch):
    import base64
    key = os.urandom(32)
    monkeypatch.setenv(ENV_KEY, base64.b64encode(key).decode())
    box = SecretBox.from_environment(tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()
    assert box.open(SecretBox(key).seal("x-secret", "c"), "c") == "x-secret"
    monkeypatch.setenv(ENV_KEY, "too-short")
    with pytest.raises(SecretKeyError, match=ENV_KEY):
        SecretBox.from_environment(tmp_path / "unused.key")
