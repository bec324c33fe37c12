"""Mail as it arrives, for tests and benchmarks: realistic, automatic and hostile.

Every function returns (name, raw bytes) pairs, built here in code (deterministic: the
same bytes every run). Lines end in CRLF, as IMAP and POP3 hand messages over, unless
the item is about line ends.

- `realistic()`: ordinary ~10 KB messages from common clients (the benchmark's set).
- `automatic()`: bounce, auto-reply, mailing list, Outlook out-of-office, read receipt.
- `hostile()`: broken MIME, bad charsets, 8-bit headers, missing and duplicate
  Message-IDs, deep nesting, NUL, garbage, ... Each must still be queued, raw intact.
- `same_message_id()`: two different messages that share one Message-ID.
- `huge_attachment(size)`: a message with a `size`-byte attachment (30 MB by default);
  `huge_attachment_payload(size)` is that attachment's content.
- `everything()`: all of the above except the huge one (it is 40 MB: ask for it).
"""
from __future__ import annotations

import base64
import random

__all__ = ["realistic", "automatic", "hostile", "same_message_id", "huge_attachment",
           "huge_attachment_payload", "everything", "nested"]

Item = tuple[str, bytes]

_RECEIVED = (
    "Received: from mail-{n}.example.net (mail-{n}.example.net [198.51.100.{n}])\n"
    "\tby mx.example.test (Postfix) with ESMTPS id 4Vb{n}Xk2z{n}Q\n"
    "\tfor <support@example.test>; Mon, 6 May 2024 09:1{n}:03 +0200 (CEST)\n"
)
_DKIM = (
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=20230601;\n"
    " t=1714979583; x=1715584383; h=to:subject:message-id:date:from:in-reply-to\n"
    " :references:mime-version:from:to:cc:subject:date:message-id:reply-to;\n"
    " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n"
    " b=" + "Zm9vYmFyYmF6cXV4" * 21 + "\n"
)
_AUTH_RESULTS = (
    "Authentication-Results: mx.example.test; dkim=pass header.d=example.net;\n"
    " spf=pass smtp.mailfrom=customer@example.net; dmarc=pass header.from=example.net\n"
)
_QUOTE = (
    "> Thank you for contacting support. Your case number is 48213. Please reply to this\n"
    "> message with the serial number of the device and a photo of the label, and we will\n"
    "> arrange a replacement within two working days.\n"
)


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


def _trace(hops: int = 4) -> str:
    """Received chain, DKIM and authentication results: most of a real header section."""
    return "".join(_RECEIVED.format(n=n) for n in range(1, hops + 1)) + _DKIM + _AUTH_RESULTS


# --- realistic ------------------------------------------------------------------------

def realistic() -> list[Item]:
    rng = random.Random(1)
    pdf = b"%PDF-1.4\n" + rng.randbytes(5000)
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(2500)
    text = "Hello,\n\nthe replacement arrived but the charger is missing. Can you send one?\n\n" \
           "Regards,\nJosé Pérez\n\n" + "On Mon, 6 May 2024 at 09:00, Support <support@example.test> wrote:\n" + _QUOTE * 16
    html = "<div dir=\"ltr\"><p>Hello,</p><p>the replacement arrived but the charger is missing." \
           " Can you send one?</p><p>Regards,<br>José Pérez</p></div><blockquote>" \
           + "<p>" + _QUOTE.replace("\n", "<br>\n") * 12 + "</p></blockquote>\n"
    gmail = _crlf(
        _trace() +
        "MIME-Version: 1.0\n"
        "References: <case-48213.1@example.test> <case-48213.2@example.test>\n"
        "In-Reply-To: <case-48213.2@example.test>\n"
        "From: =?UTF-8?Q?Jos=C3=A9_P=C3=A9rez?= <customer@example.net>\n"
        "Date: Mon, 6 May 2024 09:12:01 +0200\n"
        "Message-ID: <CAF7x9k2Lm=Qp4v3Zr8@mail.example.net>\n"
        "Subject: =?UTF-8?Q?Re=3A_Caso_48213_=E2=80=93_cargador?=\n"
        "To: Support <support@example.test>\n"
        "Content-Type: multipart/alternative; boundary=\"000000000000a1b2c3\"\n"
        "\n"
        "--000000000000a1b2c3\n"
        "Content-Type: text/plain; charset=\"UTF-8\"\n"
        "Content-Transfer-Encoding: 8bit\n\n" + text +
        "\n--000000000000a1b2c3\n"
        "Content-Type: text/html; charset=\"UTF-8\"\n"
        "Content-Transfer-Encoding: 8bit\n\n" + html +
        "\n--000000000000a1b2c3--\n")
    outlook = _crlf(
        _trace(3) +
        "From: Maria Schmidt <maria.schmidt@example.org>\n"
        "To: \"Support, Example\" <support@example.test>\n"
        "CC: Team Lead <lead@example.org>\n"
        "Subject: Rechnung 2024-117 / invoice question\n"
        "Thread-Topic: Rechnung 2024-117 / invoice question\n"
        "Thread-Index: AQHanU1k2d3aZ5iS0EyGm7w4m8Zr3g==\n"
        "Date: Mon, 6 May 2024 07:30:12 +0000\n"
        "Message-ID: <AM0PR07MB4321.eurprd07.prod.outlook.com@example.org>\n"
        "Accept-Language: de-DE, en-US\n"
        "Content-Language: de-DE\n"
        "X-MS-Has-Attach: yes\n"
        "X-MS-TNEF-Correlator:\n"
        "Content-Type: multipart/related;\n"
        "\tboundary=\"_004_AM0PR07MB4321_\";\n"
        "\ttype=\"multipart/alternative\"\n"
        "MIME-Version: 1.0\n"
        "\n"
        "--_004_AM0PR07MB4321_\n"
        "Content-Type: multipart/alternative;\n"
        "\tboundary=\"_000_AM0PR07MB4321_\"\n\n"
        "--_000_AM0PR07MB4321_\n"
        "Content-Type: text/plain; charset=\"iso-8859-1\"\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Guten Tag,\n\nin der Rechnung 2024-117 ist die Position 3 doppelt berechnet. Bitte =\n"
        "pr=FCfen Sie das.\n\nMit freundlichen Gr=FC=DFen\nMaria Schmidt\n" + _QUOTE * 12 +
        "\n--_000_AM0PR07MB4321_\n"
        "Content-Type: text/html; charset=\"iso-8859-1\"\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "<html><body><p>Guten Tag,</p><p>in der Rechnung 2024-117 ist die Position 3 =\n"
        "doppelt berechnet. Bitte pr=FCfen Sie das.</p><img src=3D\"cid:image001.png@01DA9F\">=\n"
        "<p>Mit freundlichen Gr=FC=DFen<br>Maria Schmidt</p></body></html>\n"
        "\n--_000_AM0PR07MB4321_--\n\n"
        "--_004_AM0PR07MB4321_\n"
        "Content-Type: image/png; name=\"image001.png\"\n"
        "Content-Description: image001.png\n"
        "Content-Disposition: inline; filename=\"image001.png\"; size=2508\n"
        "Content-ID: <image001.png@01DA9F>\n"
        "Content-Transfer-Encoding: base64\n\n" + _b64(png) +
        "\n--_004_AM0PR07MB4321_--\n")
    with_pdf = _crlf(
        _trace() +
        "From: orders@example.com\n"
        "To: support@example.test\n"
        "Subject: Order 99812: delivery note\n"
        "Date: Sun, 05 May 2024 23:59:59 -0700\n"
        "Message-ID: <20240506065959.99812@orders.example.com>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
        "This is a multi-part message in MIME format.\n"
        "--b1\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 7bit\n\n"
        "Please find the delivery note for order 99812 attached.\n" + _QUOTE * 4 +
        "--b1\n"
        "Content-Type: application/pdf; name=\"=?utf-8?Q?Lieferschein_n=C2=BA_99812.pdf?=\"\n"
        "Content-Disposition: attachment; filename*=utf-8''Lieferschein%20n%C2%BA%2099812.pdf\n"
        "Content-Transfer-Encoding: base64\n\n" + _b64(pdf) +
        "--b1--\n")
    return [("gmail-reply-alternative", gmail), ("outlook-related-inline-image", outlook),
            ("order-with-pdf", with_pdf)]


# --- automatic ------------------------------------------------------------------------

def automatic() -> list[Item]:
    bounce = _crlf(
        "Return-Path: <>\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\n"
        "To: support@example.test\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Date: Mon, 6 May 2024 09:30:00 +0000 (UTC)\n"
        "Message-Id: <20240506093000.1F2E3@mx.example.test>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        "\tboundary=\"1F2E3.1714987800/mx.example.test\"\n\n"
        "--1F2E3.1714987800/mx.example.test\n"
        "Content-Description: Notification\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        "<nobody@example.net>: host mx.example.net said: 550 5.1.1 User unknown\n\n"
        "--1F2E3.1714987800/mx.example.test\n"
        "Content-Description: Delivery report\n"
        "Content-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.test\n\n"
        "Final-Recipient: rfc822; nobody@example.net\n"
        "Action: failed\n"
        "Status: 5.1.1\n\n"
        "--1F2E3.1714987800/mx.example.test\n"
        "Content-Description: Undelivered Message Headers\n"
        "Content-Type: text/rfc822-headers\n\n"
        "From: support@example.test\n"
        "To: nobody@example.net\n"
        "Subject: Your case 48213\n"
        "Message-ID: <case-48213.3@example.test>\n\n"
        "--1F2E3.1714987800/mx.example.test--\n")
    auto_reply = _crlf(
        "Return-Path: <customer@example.net>\n"
        "From: customer@example.net\n"
        "To: support@example.test\n"
        "Subject: On holiday until 20 May\n"
        "Auto-Submitted: auto-replied (vacation)\n"
        "In-Reply-To: <case-48213.3@example.test>\n"
        "Message-ID: <vacation.1@example.net>\n"
        "Date: Mon, 6 May 2024 09:31:00 +0200\n\n"
        "I am away until 20 May and will read your message when I am back.\n")
    mailing_list = _crlf(
        "From: Announcements <news@lists.example.org>\n"
        "To: members@lists.example.org\n"
        "Subject: [members] May newsletter\n"
        "Precedence: list\n"
        "List-Id: Members <members.lists.example.org>\n"
        "List-Unsubscribe: <mailto:members-leave@lists.example.org>\n"
        "Message-ID: <news.2024-05@lists.example.org>\n"
        "Date: Mon, 6 May 2024 06:00:00 +0000\n\n"
        "This month: ...\n")
    # Exchange: "Automatic reply:" with X-Auto-Response-Suppress, without Auto-Submitted
    # (older servers), which is the case the header rule and the subject rule both catch.
    out_of_office = _crlf(
        "From: Maria Schmidt <maria.schmidt@example.org>\n"
        "To: Support <support@example.test>\n"
        "Subject: Automatic reply: Rechnung 2024-117\n"
        "Thread-Topic: Rechnung 2024-117\n"
        "Date: Mon, 6 May 2024 09:32:00 +0000\n"
        "Message-ID: <ooo.AM0PR07MB4321@example.org>\n"
        "X-Auto-Response-Suppress: All\n"
        "X-MS-Exchange-Inbox-Rules-Loop: maria.schmidt@example.org\n"
        "Content-Type: text/plain; charset=\"us-ascii\"\n\n"
        "I am out of the office until Monday.\n")
    ooo_subject_only = _crlf(
        "From: old-system@example.org\n"
        "To: support@example.test\n"
        "Subject: Out of Office AutoReply: Your case 48213\n"
        "Message-ID: <ooo.2@example.org>\n\n"
        "Away.\n")
    read_receipt = _crlf(
        "From: customer@example.net\n"
        "To: support@example.test\n"
        "Subject: Read: Your case 48213\n"
        "Message-ID: <mdn.1@example.net>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=r\n\n"
        "--r\nContent-Type: text/plain\n\nYour message was read.\n"
        "--r\nContent-Type: message/disposition-notification\n\n"
        "Final-Recipient: rfc822; customer@example.net\nDisposition: manual-action/MDN-sent-manually; displayed\n"
        "--r--\n")
    return [("bounce-delivery-status", bounce), ("auto-replied", auto_reply),
            ("mailing-list", mailing_list), ("outlook-out-of-office", out_of_office),
            ("out-of-office-subject-only", ooo_subject_only), ("read-receipt", read_receipt)]


# --- hostile --------------------------------------------------------------------------

def nested(depth: int) -> bytes:
    """`depth` multiparts inside one another, a text part at the bottom."""
    head = "".join(f"Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n" for i in range(depth))
    tail = "".join(f"\n--b{i}--\n" for i in reversed(range(depth)))
    return _crlf("From: deep@example.net\nSubject: deep\nMessage-ID: <deep@example.net>\nMIME-Version: 1.0\n"
                 + head + "Content-Type: text/plain\n\nat the bottom\n" + tail)


def hostile() -> list[Item]:
    items: list[Item] = []

    def add(name: str, raw: bytes) -> None:
        items.append((name, raw))

    ok = "From: a@example.net\nTo: support@example.test\nMessage-ID: <{0}@example.net>\nSubject: {0}\n"

    add("missing-close-boundary", _crlf(
        ok.format("no-close") + "Content-Type: multipart/alternative; boundary=zz\n\n"
        "--zz\nContent-Type: text/plain\n\nthe text\n--zz\nContent-Type: text/html\n\n<p>cut off"))
    add("boundary-never-appears", _crlf(
        ok.format("no-boundary") + "Content-Type: multipart/mixed; boundary=\"never-used\"\n\n"
        "just some text where the parts should be\n"))
    add("multipart-without-boundary-parameter", _crlf(
        ok.format("no-boundary-param") + "Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n"))
    add("unknown-charset", _crlf(ok.format("unknown-charset")) + (
        b"Content-Type: text/plain; charset=x-unknown-8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"caf\xc3\xa9 cr\xc3\xa8me\r\n"))
    add("charset-lies-ascii-is-utf8", _crlf(ok.format("ascii-lie")) + (
        b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"\xe2\x82\xac 5 for the caf\xc3\xa9\r\n"))
    add("charset-lies-utf8-is-latin1", _crlf(ok.format("utf8-lie")) + (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Gr\xfc\xdfe aus K\xf6ln\r\n"))
    add("missing-charset-8bit-body", _crlf(ok.format("no-charset")) + (
        b"Content-Type: text/plain\r\n\r\nna\xefve \x93quoted\x94 text\r\n"))
    add("8bit-headers-latin1", (
        b"From: Ren\xe9 Fran\xe7ois <rene@example.net>\r\nTo: support@example.test\r\n"
        b"Subject: R\xe9clamation: colis ab\xeem\xe9\r\nMessage-ID: <latin1@example.net>\r\n\r\nbody\r\n"))
    add("8bit-headers-utf8", (
        "From: Jürgen Groß <juergen@example.net>\r\nTo: \"Støtte, Kundeservice\" <support@example.test>\r\n"
        "Subject: Überweisung – 10 € zurück 🙂\r\nMessage-ID: <utf8@example.net>\r\n\r\nbody\r\n").encode())
    add("rfc2047-broken", _crlf(
        "From: =?utf-8?B?not base64!!?= <a@example.net>\n"
        "To: =?x-nonsense?Q?Caf=E9?= <b@example.net>, =?utf-8?q?Doe=2C_John?= <john@example.net>\n"
        "Subject: =?utf-8?B?4pyT?= ok =?iso-8859-1?q?caf=E9?= =?utf-8?Q?half_=E2=82?= =?utf-8?Q?=AC_euro?= =?utf-8?Q?=ZZ?=\n"
        "Message-ID: <rfc2047@example.net>\n\nbody\n"))
    add("missing-message-id", _crlf("From: a@example.net\nSubject: no id\nDate: Mon, 6 May 2024 09:00:00 +0000\n\nbody\n"))
    add("duplicate-message-id-headers", _crlf(
        "Message-ID: <first@example.net>\nFrom: a@example.net\nMessage-ID: <second@relay.example.net>\n"
        "Subject: two ids\n\nbody\n"))
    add("unusable-message-id", _crlf("Message-ID: <no at sign>\nFrom: a@example.net\nSubject: bad id\n\nbody\n"))
    add("nested-100", nested(100))
    add("bare-lf", (
        "From: lf@example.net\nSubject: bare LF\nMessage-ID: <lf@example.net>\n"
        "Content-Type: multipart/alternative; boundary=q\n\n--q\nContent-Type: text/plain\n\nlf text\n"
        "--q\nContent-Type: text/html\n\n<b>lf</b>\n--q--\n").encode())
    add("nul-bytes", b"From: n\x00ul@example.net\r\nSubject: nul\x00in subject\r\nMessage-ID: <nul@example.net>"
                     b"\r\n\r\nbody with \x00 nul\r\n")
    add("header-only", b"From: a@example.net\r\nSubject: headers only\r\nMessage-ID: <hdr@example.net>\r\n")
    add("empty", b"")
    add("garbage-binary", random.Random(2).randbytes(5000))
    add("not-mail-text", b"GET / HTTP/1.1\r\nHost: example.net\r\n\r\n")
    add("no-blank-line-before-body", _crlf("From: a@example.net\nSubject: glued\nThis line is the body.\nmore\n"))
    add("odd-addresses", _crlf(
        "From: \"Last, First\" <first.last@example.net> (comment)\n"
        "To: undisclosed-recipients:;\n"
        "Cc: team: x@example.net, y@example.net;, plain@example.net, <bracketed@example.net>,\n"
        " broken <no-close@example.net, MAILER-DAEMON\n"
        "Reply-To: \n"
        "Subject: addresses\nMessage-ID: <addr@example.net>\n\nbody\n"))
    add("bad-date", _crlf("From: a@example.net\nDate: Someday, 45 Smarch 20x4 25:61:00 +9999\nSubject: when\n\nb\n"))
    add("date-minus-zero-zone", _crlf("From: a@example.net\nDate: 6 May 2024 09:00 -0000\nSubject: when\n\nb\n"))
    add("bad-base64-attachment", _crlf(
        ok.format("bad-b64") + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nsee att\n"
        "--m\nContent-Type: application/octet-stream; name=x.bin\nContent-Transfer-Encoding: base64\n\n"
        "!!!not*base64$$$QUJD\n--m--\n"))
    add("unknown-transfer-encoding", _crlf(
        ok.format("x-cte") + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: x-weird\n\nplain anyway\n"))
    add("forwarded-message", _crlf(
        ok.format("fwd") + "Content-Type: multipart/mixed; boundary=f\n\n--f\nContent-Type: text/plain\n\nsee below\n"
        "--f\nContent-Type: message/rfc822\n\nFrom: inner@example.net\nSubject: inner\n\ninner text\n--f--\n"))
    add("8bit-filename", _crlf(ok.format("8bit-fname") + "Content-Type: multipart/mixed; boundary=f\n\n"
                               "--f\nContent-Type: text/plain\n\nx\n--f\n") + (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"Gr\xfc\xdfe.pdf\"\r\n\r\n"
        b"%PDF\r\n--f--\r\n"))
    # ~340 KB of headers: more than parse_envelope reads (the Subject at the end is lost).
    add("header-section-too-long", _crlf("From: a@example.net\n" + "".join(
        f"X-Filler-{i}: " + "y" * 70 + "\n" for i in range(4000)) + "Subject: late\n\nbody\n"))
    add("long-line-body", _crlf(ok.format("long-line") + "\n") + b"z" * 2_000_000 + b"\r\n")
    add("html-only-meta-charset", _crlf(ok.format("html-meta") + "Content-Type: text/html\n\n") + (
        b"<html><head><meta charset=\"koi8-r\"></head><body>\xf0\xd2\xc9\xd7\xc5\xd4</body></html>\r\n"))
    add("mbox-from-line", _crlf("From a@example.net Mon May  6 09:00:00 2024\nFrom: a@example.net\n"
                                "Subject: mbox\nMessage-ID: <mbox@example.net>\n\nbody\n"))
    add("references-chain-messy", _crlf(
        "From: a@example.net\nSubject: Re: Re: thread\nMessage-ID: abc.123@example.net\n"
        "In-Reply-To: <p3@example.net> (Jane's message of Mon)\n"
        "References: <p1@example.net>\n <p2@example.net>,<p2@example.net> junk <no at>\n\t<p3@example.net>\n\nb\n"))
    return items


def same_message_id() -> list[Item]:
    """Two different messages with one Message-ID: a broken sender reusing ids, or a
    resend with another body. Dedup must keep both."""
    base = "From: a@example.net\nTo: support@example.test\nMessage-ID: <reused@example.net>\nSubject: {0}\n\n{0} body\n"
    return [("same-message-id-1", _crlf(base.format("first"))), ("same-message-id-2", _crlf(base.format("second")))]


# --- huge -----------------------------------------------------------------------------

_BLOCK = 57 * 1024  # whole base64 lines (57 bytes -> 76 characters)


def huge_attachment_payload(size: int = 30 * 2**20) -> bytes:
    """Incompressible-looking content, cheaply: one random block repeated."""
    block = random.Random(3).randbytes(_BLOCK)
    return (block * (size // _BLOCK + 1))[:size]


def huge_attachment(size: int = 30 * 2**20) -> Item:
    """A message with a `size`-byte application/octet-stream attachment, in ~0.1 s:
    the base64 of one block is computed once and repeated, the tail encoded apart."""
    block = random.Random(3).randbytes(_BLOCK)
    full, rest = divmod(size, _BLOCK)
    body = base64.encodebytes(block).replace(b"\n", b"\r\n") * full
    body += base64.encodebytes(block[:rest]).replace(b"\n", b"\r\n")
    head = _crlf(
        _trace() +
        "From: big@example.net\nTo: support@example.test\nSubject: the scans\n"
        "Message-ID: <huge@example.net>\nDate: Mon, 6 May 2024 09:00:00 +0000\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"huge\"\n\n"
        "--huge\nContent-Type: text/plain; charset=utf-8\n\nScans attached.\n"
        "--huge\nContent-Type: application/octet-stream; name=\"scans.bin\"\n"
        "Content-Disposition: attachment; filename=\"scans.bin\"\nContent-Transfer-Encoding: base64\n\n")
    return f"huge-attachment-{size}", head + body + b"\r\n--huge--\r\n"


def everything() -> list[Item]:
    return realistic() + automatic() + hostile() + same_message_id()
