"""`mailgate mail send|list|get`: sending through a provider, and what was sent.

`send` takes the message from flags, the body from stdin when no flag gives one,
or a whole RFC 5322 file (`--message`): SendEmail builds every message itself (its
From is the provider's account, its Message-ID its own), so the file is read into
SendEmail's fields: recipients, subject, the text and HTML bodies, attachments and
In-Reply-To; what has no field is named in a note and left out."""
from __future__ import annotations

import argparse
import email
import email.policy
import mimetypes
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailgate.client import MailgateClient
from mailgate.v1 import mail_service_pb2

from . import output, progress
from .candidate import UsageError, warn
from .output import Stream, limited, page_size

OutboundMessage = mail_service_pb2.OutboundMessage
OK, REFUSED = 0, 1

# Headers a message file may carry that SendEmail sets itself, or that describe the MIME
# structure it rebuilds: left out without a note.
_OWN_HEADERS = {"from", "to", "cc", "bcc", "subject", "in-reply-to", "references", "message-id", "date",
                "mime-version", "content-type", "content-transfer-encoding", "content-disposition"}


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    mail = sub.add_parser("mail", parents=[common], help="send mail through a provider; what was sent")
    msub = mail.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = msub.add_parser("send", parents=[common], help="send a message and wait for its first attempt",
                        description="Recipients, subject and body from flags (the body from stdin when "
                                    "no flag gives one), or a whole RFC 5322 file with --message.")
    p.add_argument("--provider", "-P", required=True, help="the provider: its name, id or providers/{id}")
    p.add_argument("--to", action="append", default=[], metavar="ADDRESS", help="recipient (repeatable)")
    p.add_argument("--cc", action="append", default=[], metavar="ADDRESS", help="copy recipient (repeatable)")
    p.add_argument("--bcc", action="append", default=[], metavar="ADDRESS",
                   help="blind copy recipient, never in the headers (repeatable)")
    p.add_argument("--subject", "-s", help="subject")
    p.add_argument("--text", help="plain-text body; @FILE: a file's, -: stdin's")
    p.add_argument("--html", help="HTML body; @FILE: a file's, -: stdin's")
    p.add_argument("--attach", action="append", default=[], metavar="FILE", help="attach a file (repeatable)")
    p.add_argument("--in-reply-to", metavar="MESSAGE-ID", help="the message this one answers: a Message-ID "
                                                               "or outboundMessages/{id}")
    p.add_argument("--message", "-m", metavar="FILE",
                   help="an RFC 5322 message ('-': stdin); flags given beside it replace its headers")
    p.add_argument("--request-id", help="idempotency key: sending again with it sends nothing twice")
    p.set_defaults(handler=send)

    p = msub.add_parser("list", parents=[common], help="list sent and queued messages, newest first")
    p.add_argument("--provider", "-P", help="only this provider's")
    p.add_argument("--state", help="QUEUED, SENT, RETRYING or FAILED")
    p.add_argument("--filter", default="", help="AIP-160 filter, e.g. 'conversation_id = \"…\"'")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    p.set_defaults(handler=list_)

    p = msub.add_parser("get", parents=[common], help="show one sent or queued message")
    p.add_argument("name", help="outboundMessages/{id} or the id")
    p.set_defaults(handler=get)


def send(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    fields = _from_file(args.message) if args.message else {}
    for flag in ("to", "cc", "bcc"):
        if getattr(args, flag):
            fields[flag] = getattr(args, flag)
    if args.subject is not None:
        fields["subject"] = args.subject
    if args.text is not None:
        fields["text_body"] = _body(args.text)
    if args.html is not None:
        fields["html_body"] = _body(args.html)
    if args.attach:
        fields["attachments"] = fields.get("attachments", []) + [_attachment(Path(f)) for f in args.attach]
    if args.in_reply_to:
        fields.pop("reply_to_message_id", None)
        key = "reply_to_outbound_message" if args.in_reply_to.startswith("outboundMessages/") else "reply_to_message_id"
        fields[key] = args.in_reply_to
    if not args.message and args.text is None and args.html is None:
        if sys.stdin.isatty():
            raise UsageError("no body: give --text, --html or --message, or pipe the body on stdin")
        fields["text_body"] = sys.stdin.read()
    if not (fields.get("to") or fields.get("cc") or fields.get("bcc")):
        raise UsageError("no recipient: give --to, --cc or --bcc (or a message file with To:)")
    if args.request_id:
        fields["request_id"] = args.request_id
    with progress.waiting("sending"):
        sent = mg.send_email(args.provider, **fields)
    if args.json:
        out.print(output.to_json(sent))
    else:
        output.outbound_details(out, sent)
    return REFUSED if sent.state == OutboundMessage.STATE_FAILED else OK


def list_(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    terms = [args.filter] if args.filter else []
    if args.provider:
        terms.append(f'provider = "{mg.resolve(args.provider)}"')
    if args.state:
        terms.append(f"state = {args.state.upper()}")
    found = limited(mg.list_outbound_messages(" AND ".join(terms), page_size=page_size(args.limit)), args.limit)
    if args.json:
        out.print(output.to_json(found))
    elif found:
        output.outbound_table(out, found)
    else:
        out.print("no messages" + (" match" if terms else " sent yet"))
    return OK


def get(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    m = mg.get_outbound_message(args.name)
    if args.json:
        out.print(output.to_json(m))
    else:
        output.outbound_details(out, m)
    return OK


# -- a message file into SendEmail's fields
def _from_file(path: str) -> dict[str, Any]:
    raw = sys.stdin.buffer.read() if path == "-" else _read_bytes(path)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    if msg.defects:
        warn(f"{path}: " + "; ".join(type(d).__name__ for d in msg.defects[:3]))
    fields: dict[str, Any] = {}
    for header, key in (("to", "to"), ("cc", "cc"), ("bcc", "bcc")):
        addresses = [str(a) for value in msg.get_all(header, []) for a in value.addresses]
        if addresses:
            fields[key] = addresses
    if msg["subject"] is not None:
        fields["subject"] = str(msg["subject"])
    if msg["in-reply-to"]:
        fields["reply_to_message_id"] = str(msg["in-reply-to"]).split()[0]
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    if text is not None:
        fields["text_body"] = text.get_content()
    if html is not None:
        fields["html_body"] = html.get_content()
    fields["attachments"] = [mail_service_pb2.Attachment(
        filename=part.get_filename() or "attachment", content_type=part.get_content_type(),
        data=part.get_payload(decode=True) or b"") for part in msg.iter_attachments()]
    if msg["from"]:
        warn(f"{path}: From is the provider's account; the file's ({msg['from']}) is not used")
    dropped = sorted({k for k in msg.keys() if k.lower() not in _OWN_HEADERS})
    if dropped:
        warn(f"{path}: SendEmail has no field for {', '.join(dropped)}: left out")
    return fields


def _attachment(path: Path) -> mail_service_pb2.Attachment:
    kind, _ = mimetypes.guess_type(path.name)
    return mail_service_pb2.Attachment(filename=path.name, content_type=kind or "application/octet-stream",
                                       data=_read_bytes(str(path)))


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _body(value: str) -> str:
    """A body flag's text: as given, a file's (@FILE) or stdin's (-)."""
    if value == "-":
        return sys.stdin.read()
    if not value.startswith("@"):
        return value
    try:
        return _read_bytes(value[1:]).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{value[1:]} is not UTF-8 text") from None
