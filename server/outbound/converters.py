"""Outbound mail protos <-> domain, and nothing else."""
from __future__ import annotations

from mailgate.v1 import mail_service_pb2

from ..converters import resource_id, timestamp
from .compose import AttachmentIn, Draft
from .store import Outbound


def outbound_to_proto(m: Outbound) -> mail_service_pb2.OutboundMessage:
    msg = mail_service_pb2.OutboundMessage(
        name=f"outboundMessages/{m.id}", provider=f"providers/{m.provider_id}", message_id=m.message_id,
        conversation_id=m.conversation_id,
        state=mail_service_pb2.OutboundMessage.State.Value(f"STATE_{m.state.value}"),
        to=list(m.to), cc=list(m.cc), bcc=list(m.bcc), subject=m.subject,
        attachments=[mail_service_pb2.Attachment(filename=a["filename"], content_type=a["content_type"],
                                                 size_bytes=a["size_bytes"]) for a in m.attachments],
        attempts=m.attempts, create_time=timestamp(m.create_time), size_bytes=m.size_bytes,
        request_id=m.request_id or "")
    if m.next_attempt_time and m.state.value in ("QUEUED", "RETRYING"):
        msg.next_attempt_time.CopyFrom(timestamp(m.next_attempt_time))
    if m.sent_time:
        msg.sent_time.CopyFrom(timestamp(m.sent_time))
    if m.last_error or m.last_code:
        msg.last_error.CopyFrom(mail_service_pb2.DeliveryError(
            smtp_code=m.last_code, message=m.last_error, transient=m.last_transient))
    return msg


def outbound_id(name: str) -> str:
    return resource_id(name, "outboundMessages")


def draft_from_proto(r: mail_service_pb2.SendEmailRequest) -> Draft:
    return Draft(to=tuple(r.to), cc=tuple(r.cc), bcc=tuple(r.bcc), subject=r.subject,
                 text_body=r.text_body, html_body=r.html_body,
                 attachments=tuple(AttachmentIn(a.filename, a.content_type or "application/octet-stream", a.data)
                                   for a in r.attachments))
