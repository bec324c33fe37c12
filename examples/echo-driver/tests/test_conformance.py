"""The echo driver proves itself with mailgate's own conformance suite."""
import pytest
from google.protobuf import struct_pb2

from mailgate.testing.conformance import DriverConformance
from mailgate.v1 import provider_pb2


def _provider(name: str, api_key: str) -> provider_pb2.Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hello", "api_key": api_key})
    return provider_pb2.Provider(display_name=name, type="echo", account="echo@example.test",
                                 plugin_settings=settings)


class TestEchoDriver(DriverConformance):
    driver_type = "echo"

    @pytest.fixture
    def valid_provider(self):
        return _provider("Echo conformance", "let-me-in")

    @pytest.fixture
    def bad_credentials_provider(self):
        return _provider("Echo refused", "wrong-key")
