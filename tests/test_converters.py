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


def test_an_inbound_message_converts_from_the_domain_alone():
    """No store, no ORM row: the converter takes the inbound room's own types."""
    from mailgate.server.inbound.converters import inbound_to_proto
    from mailgate.server.inbound.messages import InboundMessage, InState
    from mailgate.server.inbound.parse import AttachmentInfo, Body
    from mailgate.v1 import inbound_service_pb2 as ipb

    received = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    m = InboundMessage(
        id="m-1", seq=7, provider_id="p-1", campaign="billing", message_id="<a@example.test>",
        conversation_id="c-1", subject="Invoice", from_=("Ann <ann@example.test>",), to=("desk@example.test",),
        cc=(), reply_to=(), date=received - timedelta(minutes=5), automatic=False, oversized=False, size_bytes=42,
        state=InState.DELIVERED, delivery_count=2, receive_time=received, raw=b"raw bytes")
    body = Body(text="hello", html="", defects=(), attachments=(
        AttachmentInfo(filename="a.pdf", content_type="application/pdf", size=3, content_id=None, index=0,
                       content=b"pdf"),))
    bare = inbound_to_proto(m)
    assert (bare.name, bare.provider, bare.state, bare.delivery_count) == (
        "inboundMessages/m-1", "providers/p-1", ipb.InboundMessage.STATE_DELIVERED, 2)
    assert list(getattr(bare, "from")) == ["Ann <ann@example.test>"] and bare.date == timestamp(m.date)
    assert (bare.text_body, bare.raw, list(bare.attachments)) == ("", b"", [])
    full = inbound_to_proto(m, body, with_raw=True, with_attachment_data=True)
    assert (full.text_body, full.raw, full.attachments[0].data) == ("hello", b"raw bytes", b"pdf")
    assert inbound_to_proto(m, body).attachments[0].data == b""  # contents only when asked for
