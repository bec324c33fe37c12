"""`mailgate keys rotate`: every secret re-sealed under a new key, a running server
following the key file, an interrupted rotation finished by the next run."""
from __future__ import annotations

import base64
import io
import os
import stat
import sys

import mailgate_echo_driver
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import select

from mailgate.server import keys
from mailgate.server.providers.authorizations import AuthorizationStore
from mailgate.server.secrets import ENV_KEY, SecretBox, key_id, new_key, read_key_file, sealed_with
from mailgate.server.store.models import AuthorizationRow, ProviderSecretRow
from mailgate.testing.harness import ServerThread, make_settings
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc

KEY = "let-me-in"


@pytest.fixture(autouse=True)
def _key_file_read_at_once(monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setattr(SecretBox, "RELOAD_SECONDS", 0.0)


def create(server: ServerThread, n: int, prefix: str = "p") -> list[provider_pb2.Provider]:
    stub = provider_service_pb2_grpc.ProviderServiceStub(server.channel)
    made = []
    for i in range(n):
        settings = struct_pb2.Struct()
        settings.update({"greeting": "hi", "api_key": KEY})
        made.append(stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name=f"{prefix}{i}", type="echo", account=f"{prefix}{i}@example.test",
            plugin_settings=settings))))
    return made


def opens(server: ServerThread, provider: provider_pb2.Provider) -> bool:
    """The server can read the provider's stored key: the echo check passes with it."""
    stub = provider_service_pb2_grpc.ProviderServiceStub(server.channel)
    return stub.ValidateProvider(pb.ValidateProviderRequest(name=provider.name)).report.ok


def key_ids(server: ServerThread) -> list[str]:
    def read(s):
        return ([sealed_with(r.value).hex() for r in s.scalars(select(ProviderSecretRow))]
                + [sealed_with(r.flow).hex() for r in s.scalars(select(AuthorizationRow))])
    return server.app.db.transaction(read)


def test_rotation_reseals_every_secret_and_a_running_server_follows_the_key_file(
        tmp_path, mailgate_database_url):
    settings = make_settings(tmp_path, mailgate_database_url)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        made = create(server, 3)
        box = server.app.providers.box
        server.app.db.transaction(lambda s: AuthorizationStore(s, box).add(
            made[0].name.split("/")[1], "a-state", {"verifier": "pkce"}, 600))
        old = box.key_id.hex()
        assert set(key_ids(server)) == {old}

        done = keys.rotate(settings.database_url, settings.key_file, batch=2)

        assert done.generated and done.resealed == 4 and done.key_id != old
        assert done.unused == [old]  # reported, not dropped: a replica may still seal with it
        assert [key_id(k).hex() for k in read_key_file(settings.key_file)] == [done.key_id, old]
        assert stat.S_IMODE(os.stat(settings.key_file).st_mode) == 0o600
        assert set(key_ids(server)) == {done.key_id}
        assert all(opens(server, p) for p in made)  # re-sealed under a key it did not have at start
        [late] = create(server, 1, "late")
        assert key_ids(server).count(done.key_id) == 5  # new secrets are sealed with the new key
        assert opens(server, late)

        again = keys.rotate(settings.database_url, settings.key_file, retire=True)
        assert again.generated and again.resealed == 5 and sorted(again.retired) == sorted([done.key_id, old])
        assert [key_id(k).hex() for k in read_key_file(settings.key_file)] == [again.key_id]
        assert all(opens(server, p) for p in made + [late])


def test_an_interrupted_rotation_loses_nothing_and_the_next_run_finishes_it(tmp_path, mailgate_database_url):
    settings = make_settings(tmp_path, mailgate_database_url)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        made = create(server, 5)
        old = server.app.providers.box.key_id.hex()

    def crash(done: int, total: int) -> None:
        if done:  # after the first batch was committed
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        keys.rotate(settings.database_url, settings.key_file, batch=2, progress=crash)
    current = key_id(read_key_file(settings.key_file)[0]).hex()

    with ServerThread(settings, [mailgate_echo_driver]) as server:
        assert sorted(key_ids(server)) == sorted([current] * 2 + [old] * 3)
        assert all(opens(server, p) for p in made)  # both keys are in the file

        done = keys.rotate(settings.database_url, settings.key_file, batch=2)
        assert not done.generated and done.key_id == current and done.resealed == 3
        assert set(key_ids(server)) == {current}
        assert all(opens(server, p) for p in made)


def test_with_keys_in_the_environment_the_operator_names_the_new_one(tmp_path, mailgate_database_url,
                                                                     monkeypatch):
    old, new = new_key(), new_key()
    monkeypatch.setenv(ENV_KEY, base64.b64encode(old).decode())
    settings = make_settings(tmp_path, mailgate_database_url)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        made = create(server, 2)
    monkeypatch.setenv(ENV_KEY, f"{base64.b64encode(new).decode()}, {base64.b64encode(old).decode()}")
    done = keys.rotate(settings.database_url, settings.key_file)
    assert not done.generated and done.key_id == key_id(new).hex() and done.resealed == 2
    assert not settings.key_file.exists()
    monkeypatch.setenv(ENV_KEY, base64.b64encode(new).decode())  # the old key is no longer needed
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        assert all(opens(server, p) for p in made)


def test_the_cli_rotates_and_says_what_it_did(tmp_path, monkeypatch, capsys):
    import logging

    from mailgate.cli import main

    root = logging.getLogger()  # the command sets up logging for the process: undone after the test
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)

    settings = make_settings(tmp_path)
    with ServerThread(settings, [mailgate_echo_driver]) as server:
        create(server, 2)
    monkeypatch.chdir(tmp_path)  # mailgate.key and mailgate.db where serve would have them
    assert main(["keys", "rotate"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("new key ") and "2 secrets re-sealed" in captured.out
    assert "re-sealed" not in captured.err  # progress only for a person: stderr is no terminal here

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main(["keys", "rotate"]) == 0  # a second rotation: a person watching sees it go
    assert "re-sealed 2 of 2 secrets" in sys.stderr.getvalue() and sys.stderr.getvalue().endswith("\r\x1b[K")
    assert " of 2 secrets" not in capsys.readouterr().out
    assert main(["keys", "rotate", "--retire"]) == 0
    assert "retired keys no secret uses" in capsys.readouterr().out
    assert len(read_key_file(tmp_path / "mailgate.key")) == 1
