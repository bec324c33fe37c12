"""What reading inbound mail costs: mailgate's parse_envelope and parse_body against
the standard library's parsers, per message.

    .venv/bin/python bench/parse.py [--seconds 0.5]

On the realistic ~10 KB messages of mailgate.testing.corpus (a Gmail reply with text
and HTML, an Outlook message with an inline image, an order with a PDF), times:

- parse_envelope: what the watcher runs before committing a message to the queue;
- parse_body: what GetInboundMessage / delivery runs when a consumer asks for content;
- email.message_from_bytes with policy.default and with compat32, the parse alone;
- policy.default "as used": the parse plus reading the envelope's headers and the
  text, HTML and attachments the modern API's way (get_body, iter_attachments);

and then parse_envelope on a 30 MB message (headers only, plus hashing all of it).
Each figure is the median of several runs of a timed loop, in one process.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import statistics
import time

from mailgate.server.inbound.parse import parse_body, parse_envelope
from mailgate.testing import corpus

MAX_BYTES = 25 * 2**20


def per_call(fn, raw: bytes, seconds: float) -> float:
    """Median seconds per call over 5 runs of about `seconds` / 5 each."""
    fn(raw)  # warm-up: imports, caches
    t = time.perf_counter()
    fn(raw)
    loops = max(1, int(seconds / 5 / max(time.perf_counter() - t, 1e-7)))
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            fn(raw)
        runs.append((time.perf_counter() - t) / loops)
    return statistics.median(runs)


def default_as_used(raw: bytes) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for name in ("message-id", "in-reply-to", "references", "subject", "from", "to", "cc",
                 "reply-to", "date", "auto-submitted", "precedence"):
        str(msg.get(name, ""))
    for kind in ("plain", "html"):
        if (part := msg.get_body(preferencelist=(kind,))) is not None:
            part.get_content()
    for part in msg.iter_attachments():
        part.get_filename(), len(part.get_content())


CANDIDATES = {
    "parse_envelope": lambda raw: parse_envelope(raw, max_bytes=MAX_BYTES),
    "parse_body": parse_body,
    "compat32 parse": lambda raw: email.message_from_bytes(raw, policy=email.policy.compat32),
    "policy.default parse": lambda raw: email.message_from_bytes(raw, policy=email.policy.default),
    "policy.default as used": default_as_used,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per candidate and message")
    args = ap.parse_args()

    messages = corpus.realistic()
    print(f"{'':24}" + "".join(f"{name[:22]:>24}" for name, _ in messages) + f"{'mean':>12}{'msg/s':>9}")
    print(f"{'size':24}" + "".join(f"{len(raw):>21,} B " for _, raw in messages))
    means = {}
    for label, fn in CANDIDATES.items():
        times = [per_call(fn, raw, args.seconds) for _, raw in messages]
        means[label] = statistics.mean(times)
        print(f"{label:24}" + "".join(f"{t * 1e3:>21.3f} ms" for t in times)
              + f"{means[label] * 1e3:>9.3f} ms{1 / means[label]:>9,.0f}")
    base = means["policy.default as used"]
    print()
    for label in ("parse_envelope", "parse_body", "compat32 parse", "policy.default parse"):
        print(f"{label} costs 1/{base / means[label]:.1f} of policy.default as used")

    name, raw = corpus.huge_attachment()
    t = time.perf_counter()
    env = parse_envelope(raw, max_bytes=MAX_BYTES)
    took = time.perf_counter() - t
    t = time.perf_counter()
    hashlib.sha256(raw).hexdigest()
    hashing = time.perf_counter() - t
    print(f"\nparse_envelope on {len(raw) / 2**20:.0f} MB ({name}): {took * 1e3:.1f} ms, "
          f"of which sha256 of the whole message {hashing * 1e3:.1f} ms; oversized={env.oversized}")
    t = time.perf_counter()
    parse_body(raw)
    print(f"parse_body on it: {(time.perf_counter() - t) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
