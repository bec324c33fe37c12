"""Inbound mail protos <-> domain, and nothing else."""
from __future__ import annotations

from datetime import datetime

from mailgate.v1 import inbound_service_pb2

from ..converters import resource_id, timestamp
from ..store.models import InboundRow
from . import parse as inbound_parse


def inbound_id(name: str) -> str:
    return resource_id(name, "inboundMessages")


def inbound_to_proto(row: InboundRow, *, with_body: bool = False, with_raw: bool = False,
                     with_attachment_data: bool = False,
                     body: inbound_parse.Body | None = None) -> inbound_service_pb2.InboundMessage:
    """Headers come from what was parsed at arrival; the body is parsed now, from
    the raw bytes kept, only when asked for (it costs real CPU), unless `body` is
    that parse, made elsewhere."""
    h = row.headers
    msg = inbound_service_pb2.InboundMessage(
        name=f"inboundMessages/{row.id}", provider=f"providers/{row.provider_id}", campaign=row.campaign,
        message_id=row.message_id, subject=h.get("subject", ""),
        conversation_id=row.conversation_id, delivery_count=row.delivery_count, automatic=row.automatic,
        state=inbound_service_pb2.InboundMessage.State.Value(f"STATE_{row.state}"),
        receive_time=timestamp(row.receive_time), size_bytes=row.size_bytes, oversized=row.oversized)
    for field in ("from", "to", "cc", "reply_to"):
        getattr(msg, field).extend(h.get(field, []))
    if h.get("date"):
        msg.date.CopyFrom(timestamp(datetime.fromisoformat(h["date"])))
    if with_body and not row.oversized:
        body = body or inbound_parse.parse_body(row.raw, with_content=with_attachment_data)
        msg.text_body, msg.html_body = body.text, body.html
        msg.parse_defects.extend(body.defects)
        for a in body.attachments:
            att = msg.attachments.add(filename=a.filename, content_type=a.content_type, size_bytes=a.size,
                                      content_id=a.content_id or "")
            if with_attachment_data:
                att.data = a.content or b""
    if with_raw:
        msg.raw = row.raw
    return msg
