"""What composing a message costs: mailgate's compose against the plain EmailMessage
way it bypasses (mailgate.testing.oracles.compose_reference: headers set from header
objects on an email.message.EmailMessage, flattened by the email package's generator).

    .venv/bin/python bench/compose.py [--seconds 0.5]

Per draft, the median time per message of each (several timed loops in one process),
side by side with the ratio (plain / compose: how many times faster compose is). The
same draft again and again, as a contact center writes to the same people from the
same accounts all day: both take the address caches compose keeps.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

from mailgate.server.outbound.compose import AttachmentIn, Draft, Sender, Thread, compose
from mailgate.testing.oracles import compose_reference

SENDER = Sender("support@example.test", "Soporte ACME", ("replies@example.test",))
TEXT = ("The quick brown fox jumps over the lazy dog, 0123456789, again and again. " * 2)[:75] + "\n"
DRAFTS = {
    "text 10 KB (bench/send.py)": Draft(to=("customer@example.test",), subject="Bench message",
                                        text_body=(TEXT * 140)[:10240]),
    "reply, text 1 KB, threaded": Draft(to=("Jane Roe <jane@example.test>",), subject="Re: Pedido 7",
                                        text_body="Gracias por su mensaje. " * 40),
    "HTML only, non-ASCII": Draft(to=("Núñez <n@example.test>",), subject="Reclamación nº 12",
                                  html_body="<p>Estimado señor, ¡gracias!</p>" * 100),
    "text + HTML (multipart)": Draft(to=("a@example.test",), cc=("b@example.test",), subject="Both",
                                     text_body="Hello\n" * 200, html_body="<p>Hello</p>" * 200),
    "text + PDF 50 KB": Draft(to=("a@example.test",), subject="Factura", text_body="Adjunto la factura.",
                              attachments=(AttachmentIn("factura.pdf", "application/pdf", bytes(range(256)) * 200),)),
}
THREAD = Thread("<c@example.test>", ("<a@example.test>", "<b@example.test>"))


def per_call(fn, seconds: float) -> float:
    """Median seconds per call over 5 runs of about `seconds` / 5 each."""
    fn()  # warm-up: imports, caches
    t = time.perf_counter()
    fn()
    loops = max(1, int(seconds / 5 / max(time.perf_counter() - t, 1e-7)))
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter() - t) / loops)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per draft and side")
    args = ap.parse_args()
    date = datetime.now(timezone.utc)
    print(f"{'draft':30} {'bytes':>7} {'compose':>10} {'EmailMessage':>13} {'ratio':>6}")
    for name, draft in DRAFTS.items():
        kw = dict(message_id="<1.2.3@example.test>", date=date, thread=THREAD if "threaded" in name else None)
        size = len(compose(draft, SENDER, **kw))
        fast = per_call(lambda: compose(draft, SENDER, **kw), args.seconds)
        plain = per_call(lambda: compose_reference(draft, SENDER, **kw), args.seconds)
        print(f"{name:30} {size:7,} {fast * 1e6:8.0f} µs {plain * 1e6:10.0f} µs {plain / fast:5.1f}x")


if __name__ == "__main__":
    main()
