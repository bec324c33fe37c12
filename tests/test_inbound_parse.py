"""mailgate.server.inbound_parse: reading mail that arrives, hostile mail included.

Every corpus message (mailgate.testing.corpus) must give an envelope and a body
without raising, with strings fit for protobuf and PostgreSQL; then the fields are
checked one concern at a time, against the standard library's own reading where it
is sane. Random bytes and mutated messages check "never raises" beyond the corpus.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import random
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr

import pytest

from mailgate.server.message_ids import normalize_message_id
from mailgate.server.inbound import parse as inbound_parse
from mailgate.server.inbound.parse import (
    MAX_DEPTH, MAX_REFERENCES, Body, Envelope, decode_words, parse_body, parse_envelope,
)
from mailgate.testing import corpus

ALL = dict(corpus.everything())
MB = 2**20


def msg(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def env(raw: bytes, **kw) -> Envelope:
    return parse_envelope(raw, max_bytes=kw.pop("max_bytes", 10 * MB), **kw)


def assert_clean(value) -> None:
    """Strings protobuf (valid UTF-8) and PostgreSQL text (no NUL) accept."""
    if isinstance(value, str):
        value.encode("utf-8")  # raises on lone surrogates
        assert "\0" not in value
    elif isinstance(value, tuple):
        for v in value:
            assert_clean(v)


def check_envelope(e: Envelope, raw: bytes) -> None:
    for name in ("message_id", "in_reply_to", "references", "subject", "from_", "to", "cc", "reply_to",
                 "automatic_reason", "defects"):
        assert_clean(getattr(e, name))
    assert e.content_hash == hashlib.sha256(raw).hexdigest()
    assert e.size == len(raw)
    assert e.message_id is None or normalize_message_id(e.message_id) == e.message_id
    for mid in (*e.in_reply_to, *e.references):
        assert mid.startswith("<") and mid.endswith(">") and "@" in mid
    assert e.date is None or e.date.utcoffset() == timedelta(0)
    assert e.automatic == bool(e.automatic_reason)
    for entry in (*e.from_, *e.to, *e.cc, *e.reply_to):
        assert parseaddr(entry)[1], entry  # each splits back into (name, address)


def attachment_contents(raw: bytes) -> tuple[bytes, ...]:
    """The oracle for attachment content: a walk of the parts of its own (the rule
    parse_body follows, inbound_parse._parts), each attachment's transfer encoding
    undone by itself, apart from parse_body's reading."""
    out = []
    for _, part, role in inbound_parse._parts(raw, []):
        if role == "attachment":
            try:
                out.append(inbound_parse._content(part))
            except Exception:
                out.append(b"")
    return tuple(out)


def content(raw: bytes, index: int) -> bytes | None:
    """What parse_body gives as the content of attachment `index`."""
    return parse_body(raw, with_content=True).attachments[index].content


def check_body(b: Body, raw: bytes) -> None:
    assert_clean(b.text), assert_clean(b.html), assert_clean(b.defects)
    contents = attachment_contents(raw)
    assert len(contents) == len(b.attachments)
    for i, a in enumerate(b.attachments):
        assert a.index == i and a.content is None  # only when asked for
        assert_clean(a.filename), assert_clean(a.content_type)
        assert "/" in a.content_type
        assert len(contents[i]) == a.size
    # With the content: the same reading, and each attachment's bytes as the oracle has them.
    assert parse_body(raw, with_content=True) == replace(
        b, attachments=tuple(replace(a, content=c) for a, c in zip(b.attachments, contents)))


# --- every corpus message -------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_every_message_reads_without_raising(name):
    raw = ALL[name]
    check_envelope(env(raw), raw)
    check_body(parse_body(raw), raw)


@pytest.mark.parametrize("name", [n for n, _ in corpus.realistic() + corpus.automatic()])
def test_envelope_agrees_with_the_standard_library(name):
    raw = ALL[name]
    e = env(raw)
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert e.subject == str(m["subject"])
    assert e.message_id == str(m["message-id"]).strip()
    assert e.date == (m["date"].datetime.astimezone(timezone.utc) if m["date"] else None)
    for field, header in (("from_", "from"), ("to", "to"), ("cc", "cc")):
        expected = [(a.display_name, a.addr_spec) for a in m[header].addresses] if m[header] else []
        assert [parseaddr(x) for x in getattr(e, field)] == expected


def test_realistic_bodies():
    gmail, outlook, order = (parse_body(raw) for _, raw in corpus.realistic())
    assert gmail.text.startswith("Hello,\n\nthe replacement arrived") and "José Pérez" in gmail.text
    assert "\r" not in gmail.text
    assert gmail.html.startswith('<div dir="ltr">') and not gmail.attachments and not gmail.defects
    assert "Bitte prüfen Sie das." in outlook.text and "Grüßen" in outlook.html  # quoted-printable, latin-1
    [image] = outlook.attachments
    assert (image.filename, image.content_type, image.size, image.content_id) == \
        ("image001.png", "image/png", 2508, "<image001.png@01DA9F>")
    assert order.html == ""
    [pdf] = order.attachments
    assert (pdf.filename, pdf.content_type) == ("Lieferschein nº 99812.pdf", "application/pdf")  # RFC 2231
    assert content(ALL["order-with-pdf"], 0).startswith(b"%PDF-1.4\n")


# --- ids, dedup, size -----------------------------------------------------------------

def test_message_ids():
    assert env(ALL["missing-message-id"]).message_id is None
    dup = env(ALL["duplicate-message-id-headers"])
    assert dup.message_id == "<first@example.net>" and "2 Message-ID headers" in dup.defects[0]
    bad = env(ALL["unusable-message-id"])
    assert bad.message_id is None and bad.defects
    messy = env(ALL["references-chain-messy"])
    assert messy.message_id == "<abc.123@example.net>"  # angle brackets added
    assert messy.in_reply_to == ("<p3@example.net>",)   # the comment after it ignored
    assert messy.references == ("<p1@example.net>", "<p2@example.net>", "<p3@example.net>")  # once each, junk out
    gmail = env(ALL["gmail-reply-alternative"])
    assert gmail.references == ("<case-48213.1@example.test>", "<case-48213.2@example.test>")


def test_long_reference_chains_keep_the_root_and_the_latest():
    ids = [f"<r{i}@example.net>" for i in range(500)]
    e = env(msg("From: a@example.net\nReferences: " + "\n ".join(ids) + "\n\nb\n"))
    assert len(e.references) == MAX_REFERENCES
    assert e.references[0] == ids[0] and e.references[1:] == tuple(ids[-(MAX_REFERENCES - 1):])


def test_same_message_id_different_content_hashes():
    (_, a), (_, b) = corpus.same_message_id()
    ea, eb = env(a), env(b)
    assert ea.message_id == eb.message_id == "<reused@example.net>"
    assert ea.content_hash != eb.content_hash
    assert env(a).content_hash == ea.content_hash  # the same bytes, the same hash, every time


def test_oversized():
    raw = ALL["gmail-reply-alternative"]
    assert not env(raw, max_bytes=len(raw)).oversized
    assert env(raw, max_bytes=len(raw) - 1).oversized
    assert not env(raw, max_bytes=0).oversized  # no limit
    # Headers only, with the size the server announced.
    head = raw[:raw.index(b"\r\n\r\n") + 4]
    e = env(head, max_bytes=1000, size=50 * MB)
    assert e.oversized and e.size == 50 * MB and e.subject == "Re: Caso 48213 – cargador"


# --- automatic ------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("bounce-delivery-status", "Content-Type: multipart/report"),
    ("auto-replied", "Auto-Submitted: auto-replied (vacation)"),
    ("mailing-list", "Precedence: list"),
    ("outlook-out-of-office", "X-Auto-Response-Suppress: All"),
    ("out-of-office-subject-only", "Subject 'Out of Office AutoReply: Your case 48213'"),
    ("read-receipt", "Content-Type: multipart/report"),
])
def test_automatic_mail(name, reason):
    e = env(ALL[name])
    assert e.automatic and e.automatic_reason == reason


@pytest.mark.parametrize("headers, automatic", [
    ("Auto-Submitted: no", False),
    ("Auto-Submitted: auto-generated", True),
    ("Return-Path: <>", True),
    ("Return-Path: <a@example.net>", False),
    ("Precedence: bulk", True),
    ("Precedence: first-class", False),
    ("X-Autoreply: yes", True),
    ("X-Autorespond: Vacation", True),
    ("X-Auto-Response-Suppress: OOF, AutoReply", True),
    ("X-Auto-Response-Suppress: DR, RN, NRN", False),
    ("List-Unsubscribe: <mailto:leave@example.org>", True),
    ("Subject: Automatic reply: your case", True),
    ("Subject: Réponse automatique : absence", True),
    ("Subject: Re: out of office tomorrow?", False),
    ("Subject: Our out of office policy", False),
    ("Content-Type: multipart/mixed; boundary=x", False),
])
def test_automatic_rules(headers, automatic):
    e = env(f"From: a@example.net\r\n{headers}\r\n\r\nbody\r\n".encode())
    assert e.automatic is automatic, e.automatic_reason


def test_mailer_daemon_sender_is_automatic():
    assert env(msg("From: MAILER-DAEMON@mx.example.net\n\nb\n")).automatic_reason == "From mailer-daemon"
    assert env(msg("From: Postmaster <postmaster@example.net>\n\nb\n")).automatic


@pytest.mark.parametrize("name", [n for n, _ in corpus.realistic() + corpus.hostile() + corpus.same_message_id()])
def test_ordinary_mail_is_not_automatic(name):
    assert not env(ALL[name]).automatic


# --- decoding -------------------------------------------------------------------------

@pytest.mark.parametrize("name, subject", [
    ("gmail-reply-alternative", "Re: Caso 48213 – cargador"),  # RFC 2047 Q, utf-8
    ("8bit-headers-latin1", "Réclamation: colis abîmé"),       # raw latin-1 bytes
    ("8bit-headers-utf8", "Überweisung – 10 € zurück 🙂"),     # raw utf-8 bytes
    # Bad words stay as they are; a character split across two words is joined.
    ("rfc2047-broken", "✓ ok caféhalf € euro=ZZ"),
    ("nul-bytes", "nul\ufffdin subject"),
    ("empty", ""),
    ("header-section-too-long", ""),  # beyond what is read
])
def test_subjects(name, subject):
    assert env(ALL[name]).subject == subject


def test_decode_words():
    assert decode_words("=?iso-8859-1?q?caf=E9?=") == "café"
    assert decode_words("=?ISO-8859-1?B?Y2Fm6Q==?= au lait") == "café au lait"
    assert decode_words("=?utf-8?b?Y2Fmw6k?=") == "café"  # missing padding forgiven
    assert decode_words("=?utf-8*en?q?hi?=") == "hi"  # RFC 2231 language
    assert decode_words("=?x-unknown?q?caf=C3=A9?=") == "café"  # unknown charset: 8-bit rule
    assert decode_words("=?unicode-escape?q?=5Cud800?=") == "\\ud800"  # not a charset mail may use
    assert decode_words("a =?utf-8?q?b?=  =?utf-8?q?c?= d") == "a bc d"
    assert decode_words("no words here") == "no words here"


def test_addresses():
    e = env(ALL["odd-addresses"])
    assert e.from_ == ('"Last, First" <first.last@example.net>',)  # the comment dropped, the name quoted
    assert e.to == ()  # undisclosed-recipients:;
    assert e.cc == ("x@example.net", "y@example.net", "plain@example.net", "bracketed@example.net",
                    "broken <no-close@example.net>", "MAILER-DAEMON")
    assert e.reply_to == ()
    assert env(ALL["rfc2047-broken"]).to == ("Café <b@example.net>", '"Doe, John" <john@example.net>')
    assert env(ALL["8bit-headers-latin1"]).from_ == ("René François <rene@example.net>",)
    assert env(ALL["8bit-headers-utf8"]).to == ('"Støtte, Kundeservice" <support@example.test>',)
    two_to = env(msg("From: a@example.net\nTo: b@example.net\nTo: c@example.net\n\nx\n"))
    assert two_to.to == ("b@example.net", "c@example.net")


def test_dates():
    assert env(ALL["gmail-reply-alternative"]).date == datetime(2024, 5, 6, 7, 12, 1, tzinfo=timezone.utc)
    assert env(ALL["order-with-pdf"]).date == datetime(2024, 5, 6, 6, 59, 59, tzinfo=timezone.utc)
    assert env(ALL["date-minus-zero-zone"]).date == datetime(2024, 5, 6, 9, 0, tzinfo=timezone.utc)
    bad = env(ALL["bad-date"])
    assert bad.date is None and "unparseable Date" in bad.defects[0]
    assert env(ALL["missing-message-id"]).date.tzinfo is timezone.utc
    assert env(msg("From: a@example.net\nDate: Mon, 6 May 99999 10:00:00 +0000\n\nx\n")).date is None
    assert env(msg("From: a@example.net\n\nx\n")).date is None


def test_header_section_oddities():
    assert env(ALL["mbox-from-line"]).from_ == ("a@example.net",)
    glued = env(ALL["no-blank-line-before-body"])
    assert glued.subject == "glued" and "line 3 is not a header" in glued.defects[0]
    assert env(ALL["header-only"]).subject == "headers only"
    assert env(ALL["bare-lf"]).message_id == "<lf@example.net>"
    folded = env(msg("From: a@example.net\nSubject: a long\n  folded\n\tsubject\n\nx\n"))
    assert folded.subject == "a long  folded subject"
    garbage = env(ALL["garbage-binary"])
    assert garbage.message_id is None and garbage.defects == ("no header section",)


# --- bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, defect", [
    ("unknown-charset", "café crème\n", "unknown charset 'x-unknown-8bit'"),
    ("charset-lies-ascii-is-utf8", "€ 5 for the café\n", None),
    ("charset-lies-utf8-is-latin1", "Grüße aus Köln\n", "not valid 'utf-8', read as 8-bit text"),
    ("missing-charset-8bit-body", "naïve “quoted” text\n", None),  # windows-1252 quotes
    ("unknown-transfer-encoding", "plain anyway\n", None),
    ("nul-bytes", "body with \ufffd nul\n", None),
    ("boundary-never-appears", "just some text where the parts should be\n", "without its parts; read as text"),
])
def test_body_text(name, text, defect):
    b = parse_body(ALL[name])
    assert b.text == text
    assert (defect is None and not b.defects) or any(defect in d for d in b.defects), b.defects


def test_damaged_utf8_keeps_its_good_characters():
    b = parse_body(msg("Content-Type: text/plain; charset=utf-8\n\n") + "café ".encode() + b"\xff ok\r\n")
    assert b.text == "café \ufffd ok\n" and "invalid bytes replaced" in b.defects[0]


def test_charsets_as_browsers_read_them():
    def text(charset: str, data: bytes) -> str:
        return parse_body(msg(f"Content-Type: text/plain; charset={charset}\n\n") + data).text

    assert text("gb2312", "镕".encode("gbk")) == "镕"  # GBK-only character under the gb2312 label
    assert text("iso-8859-1", b"\x80 5") == "€ 5"  # windows-1252, as browsers read latin-1
    assert text("iso-8859-1", "café".encode()) == "café"  # utf-8 mislabelled
    assert text('"UTF-8"', "ü".encode()) == "ü"


def test_html_charset_from_meta():
    assert "Привет" in parse_body(ALL["html-only-meta-charset"]).html


def test_broken_mime():
    b = parse_body(ALL["missing-close-boundary"])
    assert (b.text, b.html) == ("the text", "<p>cut off") and "close boundary not found" in b.defects[0]
    b = parse_body(ALL["bad-base64-attachment"])
    assert b.text == "see att" and b.attachments[0].filename == "x.bin"
    assert any("base64" in d for d in b.defects)
    b = parse_body(ALL["bare-lf"])
    assert (b.text, b.html) == ("lf text", "<b>lf</b>")


def test_deep_nesting_is_bounded():
    b = parse_body(ALL["nested-100"])
    assert b.text == "" and f"deeper than {MAX_DEPTH} levels" in b.defects[0]
    assert parse_body(corpus.nested(MAX_DEPTH - 1)).text == "at the bottom\n"
    # Deeper than the parser itself can go (it recurses): no parts, a defect, no exception.
    b = parse_body(corpus.nested(3000))
    assert b.text == "" and "RecursionError" in b.defects[0]


def test_attachments():
    b = parse_body(ALL["forwarded-message"])
    assert b.text == "see below"  # not the forwarded message's text
    [fwd] = b.attachments
    assert fwd.content_type == "message/rfc822"
    inner = email.message_from_bytes(content(ALL["forwarded-message"], 0))
    assert inner["subject"] == "inner"
    assert parse_body(ALL["8bit-filename"]).attachments[0].filename == "Grüße.pdf"
    bounce = parse_body(ALL["bounce-delivery-status"])
    assert [a.content_type for a in bounce.attachments] == ["message/delivery-status", "text/rfc822-headers"]
    assert b"Subject: Your case 48213" in content(ALL["bounce-delivery-status"], 1)


def test_empty_and_garbage():
    assert parse_body(b"") == Body("", "", (), ())
    e = env(b"")
    assert (e.message_id, e.subject, e.from_, e.date, e.size, e.automatic) == (None, "", (), None, 0, False)


# --- the 30 MB message ----------------------------------------------------------------

@pytest.fixture(scope="module")
def huge():
    return corpus.huge_attachment()[1]


def test_huge_message(huge):
    t = time.perf_counter()
    e = parse_envelope(huge, max_bytes=25 * MB)
    took = time.perf_counter() - t
    t = time.perf_counter()
    hashlib.sha256(huge)
    hashing = time.perf_counter() - t
    print(f"\nparse_envelope on {len(huge) / MB:.0f} MB: {took * 1e3:.1f} ms ({hashing * 1e3:.1f} ms of it hashing)")
    assert e.oversized and e.subject == "the scans" and e.message_id == "<huge@example.net>"
    t = time.perf_counter()
    b = parse_body(huge)
    print(f"parse_body: {(time.perf_counter() - t) * 1e3:.0f} ms")
    assert b.text == "Scans attached."  # the line break before a boundary is the boundary's
    [a] = b.attachments
    assert (a.filename, a.size) == ("scans.bin", 30 * MB)
    t = time.perf_counter()
    [a] = parse_body(huge, with_content=True).attachments
    print(f"parse_body with the content: {(time.perf_counter() - t) * 1e3:.0f} ms")
    assert a.content == corpus.huge_attachment_payload()


# --- fuzzing --------------------------------------------------------------------------

def mutations(rng: random.Random, raw: bytes, n: int):
    """`raw` damaged in the ways mail gets damaged: cut short, bytes flipped, MIME
    punctuation and line breaks dropped in at random places."""
    bits = [b"\r\n", b"\n", b"\r\n\r\n", b"--", b"=?utf-8?b?", b"?=", b":", b"<", b">", b";", b"\"",
            b"\x00", b"\xff", b"\xc3", b"Content-Type: multipart/mixed; boundary=", b"charset=", b" "]
    for _ in range(n):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            pos = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.3:
                data[pos] = rng.randrange(256)
            elif kind < 0.7:
                data[pos:pos] = rng.choice(bits)
            elif kind < 0.9:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                del data[pos:]
        yield bytes(data)


def test_fuzz_never_raises():
    rng = random.Random(20240506)
    seeds = [raw for raw in ALL.values() if len(raw) < 20_000]
    cases = [rng.randbytes(rng.randint(0, 3000)) for _ in range(100)]
    for raw in seeds:
        cases.extend(mutations(rng, raw, 15))
    for raw in cases:
        check_envelope(env(raw), raw)
        b = parse_body(raw)
        assert_clean(b.text), assert_clean(b.html), assert_clean(b.defects)
        assert [len(a.content or b"") for a in parse_body(raw, with_content=True).attachments] == [
            a.size for a in b.attachments]
