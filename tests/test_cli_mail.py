"""The `mailgate` commands for mail and queues against the real servers: `mail send`
through aiosmtpd, which hands the mail on to Dovecot, where the provider's watcher
finds it; `inbound tail` then shows it, and acknowledges it only with --ack.
Also: a message file read into SendEmail's fields, a provider's events, progress
for a person (stderr a terminal) and never for a script."""
from __future__ import annotations

import email
import email.policy
import io
import json
import re
import sys
import threading
import time
from email.message import EmailMessage

import pytest

from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc

from support import USER, make_provider, parse, receiving_provider


class Terminal(io.StringIO):
    def isatty(self):
        return True


def in_time(run, *argv, timeout: float = 30):
    """`run(*argv)` in a thread, so a stream that never ends fails the test instead of hanging it."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(run(*argv)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, f"mailgate {' '.join(argv)} did not finish within {timeout} s"
    return result[0]


def queue_state(server, name: str, wanted: int, timeout: float = 10) -> int:
    """The message's queue state once it is `wanted` (the server hears of a stream's end shortly after)."""
    stub = inbound_service_pb2_grpc.InboundServiceStub(server.channel)
    deadline = time.monotonic() + timeout
    while True:
        state = stub.GetInboundMessage(ipb.GetInboundMessageRequest(name=name)).state
        if state == wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_send_then_tail_shows_it_then_tail_ack_consumes_it(cli, mailgate_server, clean_dovecot, smtp_server,
                                                           mail_ca, monkeypatch):
    smtp = smtp_server("STARTTLS")
    smtp.handler.deliver_to = lambda content, rcpts: clean_dovecot.deliver(USER, content)  # the mail goes round
    receiving_provider(mailgate_server, clean_dovecot, smtp, mail_ca)

    code, out, err = cli("mail", "send", "--provider", "Receiving", "--to", USER, "--subject", "round trip",
                         stdin="Hello from the command line.\n")
    assert code == 0, err
    assert re.search(r"^state:\s+SENT$", out, re.M) and re.search(r"^to:\s+agent@example.test$", out, re.M)
    sent = re.search(r"^name:\s+(outboundMessages/\S+)$", out, re.M).group(1)

    # A look without --ack: printed as JSON lines, and left in the queue.
    code, out, _ = in_time(cli, "inbound", "tail", "support", "--limit", "1", "--json")
    assert code == 0
    [line] = out.splitlines()
    seen = json.loads(line)
    assert seen["message"]["subject"] == "round trip" and seen["ackId"]
    assert seen["message"]["textBody"].strip() == "Hello from the command line."
    name = seen["message"]["name"]
    assert queue_state(mailgate_server, name, ipb.InboundMessage.STATE_QUEUED) == ipb.InboundMessage.STATE_QUEUED  # back

    # With --ack, on a terminal: a line for the person, the count on stderr, and the message consumed.
    captured, terminal = sys.stderr, Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = in_time(cli, "inbound", "tail", "support", "--limit", "1", "--ack")
    monkeypatch.setattr(sys, "stderr", captured)
    assert code == 0
    [line] = out.splitlines()
    assert name.removeprefix("inboundMessages/") in line and "round trip" in line and "\x1b" not in out
    assert "1 message, 1 acknowledged" in terminal.getvalue()
    ACKED = ipb.InboundMessage.STATE_ACKNOWLEDGED
    assert queue_state(mailgate_server, name, ACKED) == ACKED

    code, out, _ = cli("inbound", "list", "--campaign", "support")
    assert code == 0 and out.split()[:6] == ["ID", "STATE", "RECEIVED", "CAMPAIGN", "FROM", "SUBJECT"]
    assert re.search(r"ACKNOWLEDGED\s.*\ssupport\s.*round trip$", out, re.M)
    code, out, _ = cli("inbound", "get", name)
    assert code == 0 and re.search(r"^state:\s+ACKNOWLEDGED$", out, re.M)
    assert out.rstrip().endswith("Hello from the command line.")
    code, out, _ = cli("inbound", "get", name.removeprefix("inboundMessages/"), "--raw")
    assert code == 0 and parse(out.encode())["Subject"] == "round trip"
    code, _, err = cli("inbound", "requeue", name)  # only a dead letter goes back
    assert code == 1 and err.startswith("error: FAILED_PRECONDITION")

    code, out, _ = cli("mail", "list", "--provider", "Receiving", "--state", "sent")
    assert code == 0 and re.search(rf"^{sent.removeprefix('outboundMessages/')}\s+SENT\s.*round trip$", out, re.M)
    code, out, _ = cli("mail", "get", sent, "--json")
    assert code == 0 and json.loads(out)["state"] == "STATE_SENT"

    code, out, _ = cli("providers", "events", "Receiving")
    assert code == 0 and out.split()[:5] == ["TIME", "EVENT", "STATE", "/", "CHECK"]
    assert re.search(r"STATE_CHANGED\s+new -> GREEN \(CHECKS_PASSED\)\s+credentials checked at creation$", out, re.M)
    code, out, _ = cli("providers", "events", "Receiving", "--type", "reconnect")
    assert code == 0 and out == "no events of that type\n"


def test_a_message_file_is_read_into_the_fields_of_sendemail(cli, mailgate_server, smtp_server, mail_ca, tmp_path):
    smtp = smtp_server("STARTTLS")
    make_provider(mailgate_server, smtp, mail_ca)
    m = EmailMessage()
    m["From"] = "Someone Else <else@example.test>"
    m["To"] = "Customer <customer@example.test>, second@example.test"
    m["Cc"] = "boss@example.test"
    m["Subject"] = "Your order, from a file"
    m["In-Reply-To"] = "<order-77@example.test>"
    m["X-Campaign"] = "spring"
    m.set_content("The text part.\n")
    m.add_alternative("<p>The HTML part.</p>\n", subtype="html")
    m.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    path = tmp_path / "order.eml"
    path.write_bytes(bytes(m))

    code, out, err = cli("mail", "send", "--provider", "Desk", "--message", str(path), "--bcc", "audit@example.test")
    assert code == 0, err
    assert "the file's (Someone Else <else@example.test>) is not used" in err and "X-Campaign" in err
    [got] = smtp.wait_for_messages(1)
    assert sorted(got.rcpt_tos) == ["audit@example.test", "boss@example.test", "customer@example.test",
                                    "second@example.test"]
    sent = email.message_from_bytes(got.content, policy=email.policy.default)
    assert sent["Subject"] == "Your order, from a file" and "audit" not in str(sent)  # bcc: envelope only
    assert sent["From"].addresses[0].addr_spec == USER
    assert sent.get_body(("plain",)).get_content().rstrip() == "The text part."
    assert sent.get_body(("html",)).get_content().rstrip() == "<p>The HTML part.</p>"
    [attached] = list(sent.iter_attachments())
    assert attached.get_filename() == "invoice.pdf" and attached.get_content() == b"%PDF-1.4 invoice"

    smtp.fail_next = [(550, "5.1.1 mailbox unknown")]  # refused for good: exit 1
    code, out, _ = cli("mail", "send", "-P", "Desk", "--to", "gone@example.test", "--text", "hi")
    assert code == 1 and re.search(r"^state:\s+FAILED$", out, re.M) and "550 5.1.1 mailbox unknown" in out
    code, _, err = cli("mail", "send", "-P", "Desk", "--text", "hi")
    assert code == 2 and "no recipient" in err


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "script"])
def test_a_check_waiting_on_a_slow_server_shows_progress_to_a_person_only(
        cli, mailgate_server, silent_listener, monkeypatch, terminal):
    if terminal:
        monkeypatch.setattr(sys, "stderr", Terminal())
    code, out, err = cli("--json", "providers", "validate", "--name", "Slow", "--account", USER,
                         "--smtp-host", silent_listener.host, "--smtp-port", str(silent_listener.port),
                         "--timeout", "1", "--password-stdin", stdin="whatever\n")
    assert code == 1 and "OUTCOME_FAILED" in {c["outcome"] for c in json.loads(out)["report"]["checks"]}  # stdout: JSON alone
    if terminal:  # the server waits out the 1 s timeout: the line shows, and is cleared at the end
        shown = sys.stderr.getvalue()
        assert "checking… " in shown and shown.endswith("\r\x1b[K")
    else:
        assert "checking" not in err
