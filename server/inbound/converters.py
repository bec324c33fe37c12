"""Inbound mail protos <-> domain, and nothing else."""
from __future__ import annotations

from typing import Sequence

from mailgate.v1 import inbound_service_pb2

from .. import limits
from ..converters import provider_id, resource_id, timestamp
from ..errors import InvalidArgument, Violation, Violations
from ..outbound.compose import text_problem
from .messages import Delivery, InboundMessage
from .parse import Body
from .queue import InboundSettings, Subscription

MAX_IN_FLIGHT = 1000
MAX_IN_FLIGHT_BYTES = 1 << 30
MAX_DEADLINE = 600  # seconds: a lease, and any change of it


def inbound_id(name: str) -> str:
    return resource_id(name, "inboundMessages")


def subscription(r: inbound_service_pb2.StreamInboundMailRequest, defaults: InboundSettings) -> Subscription:
    """The subscription a stream's first request asks for."""
    v = Violations()
    for name, value, limit in (("campaign", r.campaign, limits.CAMPAIGN), ("consumer", r.consumer, limits.CONSUMER)):
        if len(value) > limit:
            v.add(name, limits.too_long(limit, len(value)))
        elif problem := text_problem(value):  # the consumer's name goes into log lines
            v.add(name, problem)
    if len(r.providers) > limits.SUBSCRIBED_PROVIDERS:
        v.add("providers", f"at most {limits.SUBSCRIBED_PROVIDERS} providers, got {len(r.providers):,}")
    v.raise_if_any()
    providers = [provider_id(p, f"providers[{i}]") for i, p in enumerate(r.providers)]
    if bool(r.campaign) == bool(providers):
        raise InvalidArgument([Violation("campaign", "subscribe to a campaign or to providers (not both)")])
    if not 0 <= r.max_in_flight <= MAX_IN_FLIGHT:
        raise InvalidArgument([Violation("max_in_flight", f"must be between 1 and {MAX_IN_FLIGHT}")])
    if not 0 <= r.max_in_flight_bytes <= MAX_IN_FLIGHT_BYTES:
        raise InvalidArgument([Violation("max_in_flight_bytes", f"must be between 1 and {MAX_IN_FLIGHT_BYTES} (1 GB)")])
    if r.ack_deadline_seconds and not 10 <= r.ack_deadline_seconds <= MAX_DEADLINE:
        raise InvalidArgument([Violation("ack_deadline_seconds", f"must be between 10 and {MAX_DEADLINE}")])
    return Subscription(campaign=r.campaign or None, provider_ids=providers, consumer=r.consumer or "anonymous",
                        max_in_flight=r.max_in_flight or defaults.default_in_flight,
                        deadline=r.ack_deadline_seconds or defaults.default_deadline, include_raw=r.include_raw,
                        max_in_flight_bytes=r.max_in_flight_bytes or defaults.default_in_flight_bytes)


def check_acks(ack_ids: Sequence[str], modify_ids: Sequence[str] = (), seconds: Sequence[int] = (),
               field: str = "ack_ids") -> None:
    """How many ack ids (and deadline changes) one request may carry, and their sizes.
    An ack id that no delivery gave out is ignored, not refused."""
    v = Violations()
    for name, ids in ((field, ack_ids), ("modify_deadline_ack_ids", modify_ids)):
        if len(ids) > limits.ACK_IDS:
            v.add(name, f"at most {limits.ACK_IDS:,} in one request, got {len(ids):,}")
        elif any(len(a) > limits.ACK_ID for a in ids):
            i = next(i for i, a in enumerate(ids) if len(a) > limits.ACK_ID)
            v.add(f"{name}[{i}]", f"not an ack id: {limits.too_long(limits.ACK_ID, len(ids[i]))}")
    if len(modify_ids) != len(seconds):
        v.add("modify_deadline_seconds", "give one deadline per modify_deadline_ack_ids entry")
    elif any(not 0 <= s <= MAX_DEADLINE for s in seconds):
        i = next(i for i, s in enumerate(seconds) if not 0 <= s <= MAX_DEADLINE)
        v.add(f"modify_deadline_seconds[{i}]", f"must be between 0 and {MAX_DEADLINE}, got {seconds[i]}")
    v.raise_if_any()


def inbound_to_proto(m: InboundMessage, body: Body | None = None, *, with_raw: bool = False,
                     with_attachment_data: bool = False) -> inbound_service_pb2.InboundMessage:
    """Headers as parsed when the message was queued; text, HTML and attachments from
    `body` when given (its parse of the raw bytes); the raw bytes when `with_raw`."""
    msg = inbound_service_pb2.InboundMessage(
        name=f"inboundMessages/{m.id}", provider=f"providers/{m.provider_id}", campaign=m.campaign,
        message_id=m.message_id, subject=m.subject, conversation_id=m.conversation_id,
        delivery_count=m.delivery_count, automatic=m.automatic,
        state=inbound_service_pb2.InboundMessage.State.Value(f"STATE_{m.state.value}"),
        receive_time=timestamp(m.receive_time), size_bytes=m.size_bytes, oversized=m.oversized)
    getattr(msg, "from").extend(m.from_)
    msg.to.extend(m.to)
    msg.cc.extend(m.cc)
    msg.reply_to.extend(m.reply_to)
    if m.date:
        msg.date.CopyFrom(timestamp(m.date))
    if body is not None:
        msg.text_body, msg.html_body = body.text, body.html
        msg.parse_defects.extend(body.defects)
        for a in body.attachments:
            att = msg.attachments.add(filename=a.filename, content_type=a.content_type, size_bytes=a.size,
                                      content_id=a.content_id or "")
            if with_attachment_data:
                att.data = a.content or b""
    if with_raw and m.raw is not None:
        msg.raw = m.raw
    return msg


def received_to_proto(part: list[tuple[Delivery, Body | None]],
                      with_raw: bool) -> list[inbound_service_pb2.ReceivedInboundMessage]:
    """Deliveries as sent on the stream (blocking: CPU work)."""
    return [inbound_service_pb2.ReceivedInboundMessage(ack_id=d.ack_id, message=inbound_to_proto(
        d.message, body, with_raw=with_raw)) for d, body in part]
