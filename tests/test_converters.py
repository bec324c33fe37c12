"""Converters between the store's values and the contract's messages."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mailgate.server.converters import timestamp


@pytest.mark.parametrize("dt", [
    datetime(2026, 12, 2, 19, 5, 3, 123456, tzinfo=timezone.utc),
    datetime(2026, 12, 2, 19, 5, 3, 123456),  # naive, as SQLite gives it back: UTC
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(1969, 12, 31, 23, 59, 59, 500000),  # before the epoch: nanos stay positive
    datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999),
])
def test_a_timestamp_is_what_protobuf_makes_of_the_datetime(dt):
    expected = Timestamp()
    expected.FromDatetime(dt)
    assert timestamp(dt) == expected
