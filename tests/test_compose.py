"""mailgate.server.compose: the MIME message as sent, and the request checks.

Every composed message is parsed back with the standard parser and checked on what a
recipient's client would see: exact header values, MIME structure, decoded content.
"""
from __future__ import annotations

import email.policy
import re
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from mailgate.server.outbound.compose import (
    MAX_REFERENCES, AttachmentIn, Draft, Sender, Thread, check_draft, compose,
    envelope_recipients, estimated_size, new_message_id, reply_subject,
)
from mailgate.server.errors import Violations
from mailgate.server.message_ids import normalize_message_id

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
MID = "<1.2.3@example.test>"
SENDER = Sender("support@example.test")
PDF = AttachmentIn("Factura nº 7.pdf", "application/pdf", b"%PDF-1.4 fake\n")
BINARY = AttachmentIn("all.bin", "application/octet-stream", bytes(range(256)) * 3)


def build(draft: Draft | None = None, sender: Sender = SENDER, thread: Thread | None = None,
          **draft_fields) -> tuple[bytes, EmailMessage]:
    draft = draft or Draft(**{"to": ("jane@example.test",), "text_body": "hi", **draft_fields})
    raw = compose(draft, sender, message_id=MID, date=DATE, thread=thread)
    return raw, BytesParser(policy=email.policy.default).parsebytes(raw)


def header_section(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def text_of(part) -> str:
    # The parser keeps the CRLF of the wire; set_content ends a body with a line break.
    return part.get_content().replace("\r\n", "\n")


def violations(draft: Draft, max_bytes: int = 0) -> dict[str, str]:
    v = Violations()
    check_draft(draft, max_bytes=max_bytes, v=v)
    return {x.field: x.description for x in v.items}


# --- headers ----------------------------------------------------------------------------

def test_from_without_and_with_display_name():
    _, msg = build()
    assert msg["From"] == "support@example.test"
    _, msg = build(sender=Sender("support@example.test", "Soporte ACME"))
    assert msg["From"] == "Soporte ACME <support@example.test>"
    assert msg["From"].addresses[0].display_name == "Soporte ACME"


@pytest.mark.parametrize("name", ["Servicio Técnico", "客服"])
def test_non_ascii_from_name_is_rfc2047_encoded_and_round_trips(name):
    raw, msg = build(sender=Sender("support@example.test", name))
    assert msg["From"].addresses[0].display_name == name
    assert msg["From"].addresses[0].addr_spec == "support@example.test"
    # Servers without SMTPUTF8 need pure ASCII headers: the name travels as =?utf-8?...?=.
    assert header_section(raw).isascii()
    assert re.search(rb"^From: .*=\?utf-8\?[bq]\?", header_section(raw), re.M)


def test_to_and_cc_keep_display_names_and_reply_to_lists_every_address():
    _, msg = build(to=("Jane Doe <jane@example.test>", '"Pérez, Juan" <juan@example.test>'),
                   cc=("copy@example.test",),
                   sender=Sender("support@example.test", reply_to=("a@example.test", "b@example.test")))
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Jane Doe", "jane@example.test"), ("Pérez, Juan", "juan@example.test")]
    assert msg["Cc"] == "copy@example.test"
    assert len(msg.get_all("Reply-To")) == 1  # one header, comma-separated
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["a@example.test", "b@example.test"]


def test_no_reply_to_header_without_reply_to():
    _, msg = build()
    assert "Reply-To" not in msg


def test_bcc_never_reaches_the_bytes():
    raw, msg = build(to=("jane@example.test",), bcc=("hidden@example.test", "Boss <boss@example.test>"))
    assert b"hidden@" not in raw and b"boss@" not in raw and b"bcc" not in raw.lower()
    assert "Bcc" not in msg


def test_bcc_only_gets_undisclosed_recipients_in_to():
    raw, msg = build(to=(), bcc=("hidden@example.test",))
    assert msg["To"] == "undisclosed-recipients:;"
    assert b"hidden@" not in raw


def test_envelope_has_every_recipient_once_in_ascii():
    draft = Draft(to=("Jane <jane@example.test>", "ana@exämple.test"), cc=("JANE@example.test",),
                  bcc=("hidden@example.test",))
    assert envelope_recipients(draft) == (
        "jane@example.test", "ana@xn--exmple-cua.test", "hidden@example.test")


def test_date_is_utc_and_parses():
    _, msg = build()
    assert msg["Date"] == "Mon, 06 May 2024 07:08:09 +0000"
    assert msg["Date"].datetime == DATE
    # An aware date in another zone is written in UTC.
    madrid = DATE.astimezone(timezone(timedelta(hours=2)))
    raw = compose(Draft(to=("a@example.test",), text_body="x"), SENDER, message_id=MID, date=madrid)
    assert b"Date: Mon, 06 May 2024 07:08:09 +0000\r\n" in raw
    with pytest.raises(ValueError):
        compose(Draft(to=("a@example.test",), text_body="x"), SENDER, message_id=MID,
                date=datetime(2024, 5, 6))


def test_message_id_is_on_the_account_domain():
    mid = new_message_id("support@mail.example.test")
    assert re.fullmatch(r"<[^@<>\s]+@mail\.example\.test>", mid)
    assert mid != new_message_id("support@mail.example.test")
    assert new_message_id("s@exämple.test").endswith("@xn--exmple-cua.test>")
    raw = compose(Draft(to=("a@example.test",), text_body="x"), SENDER, message_id=mid, date=DATE)
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert msg["Message-ID"] == mid and msg["MIME-Version"] == "1.0"


def test_headers_are_minimal():
    _, msg = build(subject="s")
    assert [k for k in msg.keys()] == [
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding"]


def test_lines_end_in_crlf():
    raw, _ = build(text_body="one\ntwo\r\nthree\rfour", attachments=(PDF,))
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")


# --- bodies and structure --------------------------------------------------------------

def test_text_only():
    _, msg = build(text_body="Hola")
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert text_of(msg) == "Hola\n"


def test_html_only():
    _, msg = build(text_body="", html_body="<p>Hola</p>")
    assert msg.get_content_type() == "text/html"
    assert text_of(msg) == "<p>Hola</p>\n"


def test_text_and_html_are_alternatives_text_first():
    _, msg = build(text_body="Hola", html_body="<p>Hola</p>")
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert "MIME-Version" not in list(msg.iter_parts())[1]  # only the top has it


def test_attachments_wrap_the_body_in_multipart_mixed():
    raw, msg = build(text_body="Hola", html_body="<p>Hola</p>", attachments=(PDF, BINARY))
    assert msg.get_content_type() == "multipart/mixed"
    body, pdf, binary = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert (pdf.get_content_type(), pdf.get_filename()) == ("application/pdf", "Factura nº 7.pdf")
    assert pdf.get_content_disposition() == "attachment"
    # The non-ASCII filename goes as an RFC 2231 parameter.
    assert b"filename*=utf-8''Factura%20n%C2%BA%207.pdf" in raw
    assert pdf.get_content() == PDF.data
    assert binary["Content-Transfer-Encoding"] == "base64"
    assert binary.get_content() == BINARY.data  # every byte value, exactly


def test_attachment_without_body_or_content_type():
    _, msg = build(text_body="", attachments=(AttachmentIn("x.dat", "", b"\x00\x01"),))
    (part,) = msg.iter_parts()
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_content() == b"\x00\x01"


@pytest.mark.parametrize("text", [
    "Estimado señor Núñez: ¿recibió la factura? Saludos, Atención al Cliente",
    "您好，您的订单已发货。",
    "Gracias 🙏😀 — ¡hasta pronto!",
])
def test_non_ascii_subject_and_bodies_round_trip_in_7bit(text):
    raw, msg = build(subject=text, text_body=text, html_body=f"<p>{text}</p>")
    assert raw.isascii()  # no 8BITMIME needed anywhere
    assert msg["Subject"] == text
    plain, html = msg.iter_parts()
    assert text_of(plain) == text + "\n" and text_of(html) == f"<p>{text}</p>\n"
    assert {p["Content-Transfer-Encoding"] for p in (plain, html)} <= {"quoted-printable", "base64"}


def test_long_subject_and_long_body_lines_fold_and_round_trip():
    subject = "Reclamación número 12345 sobre la entrega del pedido " * 40
    body = "x" * 5000
    raw, msg = build(subject=subject, text_body=body, to=tuple(f"u{i}@example.test" for i in range(80)))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert max(len(line) for line in header_section(raw).split(b"\r\n")) <= 78
    assert msg["Subject"] == subject
    assert text_of(msg) == body + "\n"
    assert len(msg["To"].addresses) == 80


# --- threading --------------------------------------------------------------------------

def test_without_thread_no_threading_headers_and_subject_as_given():
    _, msg = build(subject="Hola")
    assert "In-Reply-To" not in msg and "References" not in msg
    assert msg["Subject"] == "Hola"


def test_reply_threads_and_prefixes_subject():
    thread = Thread("<c@example.test>", ("<a@example.test>", "<b@example.test>"))
    _, msg = build(subject="Pedido 7", thread=thread)
    assert msg["In-Reply-To"] == "<c@example.test>"
    assert msg["References"] == "<a@example.test> <b@example.test> <c@example.test>"
    assert msg["Subject"] == "Re: Pedido 7"


def test_thread_ids_get_brackets_and_unusable_references_are_dropped():
    thread = Thread("c@example.test", ("a@example.test", "not an id", "<x\r\nBcc: evil@example.test>",
                                       "<c@example.test>"))
    raw, msg = build(thread=thread)
    assert msg["In-Reply-To"] == "<c@example.test>"
    assert msg["References"] == "<a@example.test> <c@example.test>"
    assert b"evil" not in raw


def test_long_message_ids_stay_whole():
    # As unstructured text the email package would cut a long id into =?utf-8?q?...?= words.
    long_ids = tuple(f"<{'x' * 90}.{i}@mail.example.test>" for i in range(5))
    raw, msg = build(thread=Thread(long_ids[-1], long_ids[:-1]))
    assert b"=?" not in header_section(raw)
    assert msg["References"] == " ".join(long_ids)
    assert msg["In-Reply-To"] == long_ids[-1]


def test_references_are_trimmed_keeping_the_root_and_the_latest():
    chain = tuple(f"<{i}@example.test>" for i in range(30))
    _, msg = build(thread=Thread("<answered@example.test>", chain))
    ids = str(msg["References"]).split()
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "<0@example.test>" and ids[-1] == "<answered@example.test>"
    assert ids[1:-1] == [f"<{i}@example.test>" for i in range(30 - MAX_REFERENCES + 2, 30)]


@pytest.mark.parametrize("subject, expected", [
    ("Pedido 7", "Re: Pedido 7"),
    ("Re: Pedido 7", "Re: Pedido 7"),
    ("RE: Pedido 7", "RE: Pedido 7"),
    ("re:Pedido 7", "re:Pedido 7"),
    ("Re : Pedido 7", "Re : Pedido 7"),
    ("Re[2]: Pedido 7", "Re[2]: Pedido 7"),
    ("Fwd: Pedido 7", "Re: Fwd: Pedido 7"),
    ("AW: Pedido 7", "Re: AW: Pedido 7"),  # localized prefixes are not recognised
    ("Reclamación", "Re: Reclamación"),     # "Re" must be followed by ":"
    ("", "Re:"),
])
def test_reply_subject(subject, expected):
    assert reply_subject(subject) == expected


@pytest.mark.parametrize("value, expected", [
    ("<a@b.test>", "<a@b.test>"), ("a@b.test", "<a@b.test>"), (" <a.b+c@[1.2.3.4]> ", "<a.b+c@[1.2.3.4]>"),
    ("<a b@c>", None), ("<12345>", None), ("<a@b@c>", None), ("<é@b>", None), ("", None), ("<>", None),
    ("<a@b>\r\nBcc: x@y", None),
])
def test_normalize_message_id(value, expected):
    assert normalize_message_id(value) == expected


# --- defence in depth -------------------------------------------------------------------

@pytest.mark.parametrize("draft, sender", [
    (Draft(to=("a@example.test",), subject="Hi\r\nBcc: evil@example.test", text_body="x"), SENDER),
    (Draft(to=("a@example.test\nBcc: evil@example.test",), text_body="x"), SENDER),
    (Draft(to=("a@example.test",), text_body="x"), Sender("s@example.test", "Evil\nBcc: e@example.test")),
    (Draft(to=("a@example.test",), attachments=(AttachmentIn("a\r\n.pdf", "", b""),)), SENDER),
])
def test_compose_refuses_line_breaks_even_unchecked(draft, sender):
    with pytest.raises(ValueError):
        compose(draft, sender, message_id=MID, date=DATE)


# --- check_draft ------------------------------------------------------------------------

def test_a_good_draft_has_no_violations():
    draft = Draft(to=("Jane Doe <jane@example.test>", '"Pérez, Juan" <juan@example.test>'),
                  cc=("José <jose@exämple.test>",), bcc=("b@example.test",), subject="Hola",
                  text_body="x", attachments=(PDF,))
    assert violations(draft, max_bytes=10 << 20) == {}


def test_header_injection_is_refused_everywhere():
    bad = "must not contain line breaks (CR or LF)"
    draft = Draft(to=("a@example.test\r\nBcc: evil@example.test",), cc=("b@example.test\n",),
                  subject="Hi\r\nBcc: evil@example.test", text_body="x",
                  attachments=(AttachmentIn("a.pdf\r\nX: y", "application/pdf\n", b""),))
    assert violations(draft) == {"to[0]": bad, "cc[0]": bad, "subject": bad,
                                 "attachments[0].filename": bad, "attachments[0].content_type": bad}


def test_other_control_characters_are_refused():
    found = violations(Draft(to=("a@example.test",), subject="a\u2028b", text_body="x",
                             attachments=(AttachmentIn("a\x00.pdf", "", b""),)))
    assert set(found) == {"subject", "attachments[0].filename"}


def test_no_recipients_and_no_content():
    assert violations(Draft()) == {
        "recipients": "give at least one of to, cc, bcc",
        "text_body": "give a text or an HTML body (or both), or an attachment"}


@pytest.mark.parametrize("entry", [
    "not-an-address", "jane@", "a@example.test, b@example.test", "Doe, Jane <jane@example.test>",
    "Jane <jane@example.test> trailing", "group: a@example.test;", "", "jane@example.local",
    "josé@example.test",  # non-ASCII local part needs SMTPUTF8
])
def test_invalid_recipient(entry):
    found = violations(Draft(to=("ok@example.test",), bcc=(entry,), text_body="x"))
    assert list(found) == ["bcc[0]"]


def test_attachment_fields():
    found = violations(Draft(to=("a@example.test",), attachments=(
        AttachmentIn("", "application/pdf", b""), AttachmentIn("a", "pdf", b""),
        AttachmentIn("b", "text/plain; charset=utf-8", b""), AttachmentIn("c", "multipart/mixed", b""),
        AttachmentIn("d", "Application/PDF", b""))))
    assert list(found) == ["attachments[0].filename", "attachments[1].content_type",
                           "attachments[2].content_type", "attachments[3].content_type"]


def test_size_limit():
    draft = Draft(to=("a@example.test",), attachments=(AttachmentIn("big.bin", "", bytes(3 << 20)),))
    found = violations(draft, max_bytes=2 << 20)
    assert list(found) == ["size"]
    assert "about 4.1 MB" in found["size"] and "limit of 2 MB" in found["size"]
    assert violations(draft, max_bytes=5 << 20) == {}
    assert violations(draft, max_bytes=0) == {}  # no limit


def test_estimated_size_is_not_below_the_real_size():
    for draft in [
        Draft(to=("Jane <a@example.test>",), subject="Hola señor", text_body="ñ" * 5000, html_body="<p>中</p>" * 500,
              attachments=(PDF, BINARY)),
        Draft(to=("a@example.test",), text_body="x"),
        Draft(to=tuple(f"客服 {i} <u{i}@example.test>" for i in range(50)), text_body="x" * 100_000),
    ]:
        assert estimated_size(draft) >= len(compose(draft, SENDER, message_id=MID, date=DATE))


# --- the fast path is the email package's output, byte for byte -------------------------

_BOUNDARY = re.compile(rb"===============\d+==")  # random in both: compared apart from it


@pytest.mark.parametrize("seed", range(6))
def test_compose_writes_exactly_what_an_email_message_would(seed):
    """compose writes headers from cached folds and encodes a single text part itself;
    compose_reference is the plain EmailMessage + generator way. Same bytes, always."""
    import random

    from mailgate.testing.oracles import compose_reference
    rnd = random.Random(seed)
    subjects = ["", "Hola", "Estimado señor Núñez", "=?utf-8?q?caf=C3=A9?=", "two  spaces", " leading",
                "trailing ", "x" * 200, "Re: Pedido 7", "tab\there", "Reclamación número 12345 " * 10, "a" * 69]
    bodies = ["", "Hola", "x" * 5000, "one\ntwo\r\nthree\rfour", "Gracias 🙏😀 — ¡hasta pronto!\n" * 30,
              "a" * 78 + "\n" + "b" * 79, "línea\n" * 400, "=3D and . at line start\n.\n"]
    senders = [SENDER, Sender("support@example.test", "Soporte ACME"),
               Sender("s@exämple.test", "客服", ("a@example.test", "B <b@example.test>")),
               Sender("support@example.test", "A \"quoted\" (name), with commas")]
    recipients = [(), ("jane@example.test",), ("Jane Doe <jane@example.test>", '"Pérez, Juan" <juan@example.test>'),
                  tuple(f"u{i}@example.test" for i in range(40)), ("Ana <ana@exämple.test>",)]
    threads = [None, Thread("<c@example.test>", ("<a@example.test>", "<b@example.test>")),
               Thread(f"<{'x' * 90}.1@mail.example.test>", tuple(f"<{i}@example.test>" for i in range(30)))]
    ids = [MID, new_message_id("support@example.test"), f"<{'y' * 70}@example.test>"]
    dates = [DATE, DATE.astimezone(timezone(timedelta(hours=-5, minutes=-30)))]
    for _ in range(150):
        draft = Draft(to=rnd.choice(recipients), cc=rnd.choice([(), ("copy@example.test",)]),
                      bcc=("hidden@example.test",), subject=rnd.choice(subjects), text_body=rnd.choice(bodies),
                      html_body=rnd.choice(["", "", "<p>Hola</p>", "<p>" + "ñ" * 300 + "</p>"]),
                      attachments=rnd.choice([(), (PDF,), (PDF, BINARY)]))
        sender, kw = rnd.choice(senders), dict(message_id=rnd.choice(ids), date=rnd.choice(dates),
                                               thread=rnd.choice(threads))
        fast, plain = compose(draft, sender, **kw), compose_reference(draft, sender, **kw)
        assert _BOUNDARY.sub(b"B", fast) == _BOUNDARY.sub(b"B", plain), (draft, sender, kw)
