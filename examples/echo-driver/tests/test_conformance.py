"""The echo driver proves itself with mailgate's own conformance suite."""
import uuid

import pytest
from google.protobuf import struct_pb2

from mailgate.testing.conformance import DriverConformance
from mailgate.v1 import provider_pb2


def _provider(name: str, api_key: str, **settings) -> provider_pb2.Provider:
    struct = struct_pb2.Struct()
    struct.update({"greeting": "hello", "api_key": api_key, **settings})
    return provider_pb2.Provider(display_name=name, type="echo", account="echo@example.test",
                                 plugin_settings=struct)


class TestEchoDriver(DriverConformance):
    driver_type = "echo"

    @pytest.fixture
    def valid_provider(self):
        return _provider("Echo conformance", "let-me-in")

    @pytest.fixture
    def bad_credentials_provider(self):
        return _provider("Echo refused", "wrong-key")

    @pytest.fixture
    def spool(self, tmp_path):
        spool = tmp_path / "spool"
        spool.mkdir()
        return spool

    @pytest.fixture
    def receiving_provider(self, spool):
        p = _provider("Echo receiving", "let-me-in", spool_dir=str(spool))
        p.receive_emails, p.campaign = True, "echoes"
        return p

    @pytest.fixture
    def deliver_mail(self, spool):
        def deliver(raw: bytes) -> None:  # written under another name, then renamed: never read half written
            name = uuid.uuid4().hex
            (spool / f".{name}.tmp").write_bytes(raw)
            (spool / f".{name}.tmp").rename(spool / f"{name}.eml")
        return deliver
