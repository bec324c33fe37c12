"""Test oracles: the plain library way of what mailgate does faster by hand.

The equivalence tests compare mailgate's code with these (tests/test_compose.py,
tests/test_smtp_pool.py) and the benchmarks time both (bench/compose.py,
bench/smtp_client.py). Slow and simple on purpose; never used by the server.

* `compose_reference`: the message `compose.compose` writes, built as an
  email.message.EmailMessage with its headers set from header objects and
  flattened by the email package's generator.
* `smtplib_send`: one mail transaction through smtplib.SMTP.sendmail, its outcome
  told in SmtpPool.send's terms (SendResult, or SendError with the same code, words,
  transience and refused recipients).
"""
from __future__ import annotations

import smtplib
import ssl
from datetime import datetime, timezone
from email.headerregistry import Address, Group
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

from mailgate.drivers.transport.errors import classify
from mailgate.drivers.transport.pool import SendError, SendResult
from mailgate.server.message_ids import normalize_message_id
from mailgate.server.outbound import compose as _compose
from mailgate.server.outbound.compose import Draft, Sender, Thread

__all__ = ["compose_reference", "smtplib_send"]


def compose_reference(draft: Draft, sender: Sender, *, message_id: str, date: datetime,
                      thread: Thread | None = None) -> bytes:
    """`compose.compose` the plain way: an EmailMessage, its headers set from header
    objects, flattened by the email package's generator. Bodies and attachments are
    made by the same helpers as compose's (set_content on MIME parts)."""
    _compose._check_compose_input(draft, sender, message_id, date)
    policy = _compose.POLICY
    msg = EmailMessage(policy=policy)
    account = _compose._header_address(sender.account)
    msg["From"] = Address(sender.from_name.strip(), account.username, account.domain)
    if draft.to:
        msg["To"] = [_compose._header_address(e) for e in draft.to]
    elif not draft.cc:
        msg["To"] = Group("undisclosed-recipients")
    if draft.cc:
        msg["Cc"] = [_compose._header_address(e) for e in draft.cc]
    # draft.bcc: envelope only, by design.
    if sender.reply_to:
        msg["Reply-To"] = [_compose._header_address(e) for e in sender.reply_to]
    msg["Subject"] = _compose.reply_subject(draft.subject) if thread else draft.subject
    msg["Date"] = format_datetime(date.astimezone(timezone.utc))
    msg["Message-ID"] = message_id
    if thread:
        answered = normalize_message_id(thread.message_id)
        if answered is None:
            raise ValueError(f"{thread.message_id!r} is not a Message-ID")
        msg["In-Reply-To"] = answered
        msg["References"] = " ".join(_compose._references(thread.references, answered))
    msg["MIME-Version"] = "1.0"

    if draft.attachments:
        msg.make_mixed()
        if draft.text_body or draft.html_body:
            body = MIMEPart(policy=policy)
            _compose._set_body(body, draft)
            msg.attach(body)
        for a in draft.attachments:
            msg.attach(_compose._attachment(a))
    else:
        _compose._set_body(msg, draft)
    return msg.as_bytes(policy=policy)


def smtplib_send(host: str, port: int, security: str, login: str, password: str, *,
                 context: ssl.SSLContext | None, mail_from: str, recipients: list[str], raw: bytes,
                 timeout: float = 5.0) -> SendResult:
    """Connects (security "NONE", "STARTTLS" or "TLS"), logs in and sends `raw` with
    sendmail, asking for SMTPUTF8 when an address or a header is not ASCII and for
    BODY=8BITMIME when the message is not, if the server offers them. The outcome as
    SmtpPool.send tells it: replies' words with their whitespace collapsed, 4xx
    transient and 5xx not, all recipients refused reported with the first temporary
    refusal if any, connection trouble classified by the transport's `classify`."""
    # A local_hostname now keeps smtplib from a reverse DNS lookup (getfqdn); EHLO
    # then names the connection's own address, as connect_smtp does.
    if security == "TLS":
        client: smtplib.SMTP = smtplib.SMTP_SSL(timeout=timeout, context=context, local_hostname="localhost")
    else:
        client = smtplib.SMTP(timeout=timeout, local_hostname="localhost")
    with client:
        client._host = host  # as SMTP(host) sets it: the name TLS checks the certificate against
        client.connect(host, port)
        client.local_hostname = f"[{client.sock.getsockname()[0]}]"
        if security == "STARTTLS":
            client.starttls(context=context)
        client.login(login, password)
        client.ehlo_or_helo_if_needed()
        end = raw.find(b"\r\n\r\n")
        headers = raw[:end if end >= 0 else len(raw)]
        options = []
        if not (all(a.isascii() for a in (mail_from, *recipients)) and headers.isascii()) \
                and client.has_extn("smtputf8"):
            options.append("SMTPUTF8")
        if not raw.isascii() and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        final: list[tuple[int, bytes]] = []
        data = client.data

        def keep_final_reply(msg: bytes) -> tuple[int, bytes]:  # sendmail returns only refusals
            final.append(data(msg))
            return final[-1]

        client.data = keep_final_reply  # type: ignore[method-assign]
        try:
            refused = client.sendmail(mail_from, recipients, raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            every = {r: (c, _words(m)) for r, (c, m) in e.recipients.items()}
            if any(c == 421 for c, _ in every.values()):  # the server is closing the connection
                code, words = next((c, m) for c, m in every.values() if c == 421)
                raise SendError(code, words, transient=True) from e
            code, words = next((r for r in every.values() if r[0] < 500), next(iter(every.values())))
            raise SendError(code, words, transient=code < 500, refused=every) from e
        except smtplib.SMTPResponseException as e:  # MAIL or DATA refused
            raise SendError(e.smtp_code, _words(e.smtp_error), transient=e.smtp_code < 500) from e
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            trouble = classify(e, "smtp", "session", timeout=timeout)
            raise SendError(0, trouble.message, transient=True, error_code=trouble.code) from e
        code, resp = final[-1]
        return SendResult(code, _words(resp), {r: (c, _words(m)) for r, (c, m) in refused.items()})


def _words(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())
