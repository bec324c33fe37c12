"""`mailgate inbound tail|list|get|requeue`: the campaign queues of received mail.

`tail` is a consumer of the queue like any other: it prints each message it is
given (a line, or a JSON object per line with --json) and, with --ack only,
acknowledges it once printed. Without --ack the messages stay in the queue: tail
holds at most --max-in-flight of them (extending their deadline, so holding them
costs no delivery attempt) and gives them back, untried, when it stops."""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading

from google.protobuf import json_format

from mailgate.client import MailgateClient
from mailgate.client._client import InboundStream
from mailgate.v1 import inbound_service_pb2

from . import output
from .candidate import UsageError
from .output import Stream, limited, page_size
from .progress import StatusLine

InboundMessage = inbound_service_pb2.InboundMessage
OK = 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    inbound = sub.add_parser("inbound", parents=[common], help="the campaign queues of received mail")
    isub = inbound.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = isub.add_parser("tail", parents=[common], help="print a campaign's mail as it arrives (--ack consumes it)")
    p.add_argument("campaign", nargs="?", default="", help="the campaign (or give --provider)")
    p.add_argument("--provider", "-P", action="append", default=[], help="consume these providers' mail instead "
                                                                        "(repeatable)")
    p.add_argument("--ack", action="store_true", help="acknowledge each message once printed: it leaves the queue")
    p.add_argument("--limit", type=int, default=0, help="stop after this many messages (default: until ^C)")
    p.add_argument("--max-in-flight", type=int, default=10, help="messages held unacknowledged at once (default 10)")
    p.add_argument("--deadline", type=int, default=60, help="seconds a message stays with tail unacknowledged "
                                                            "before it is delivered again (default 60)")
    p.add_argument("--consumer", default=f"mailgate-cli@{socket.gethostname()}", help="consumer name, for operators")
    p.set_defaults(handler=tail)

    p = isub.add_parser("list", parents=[common], help="list queued and received messages, newest first")
    p.add_argument("--campaign", help="only this campaign's")
    p.add_argument("--provider", "-P", help="only this provider's")
    p.add_argument("--state", help="QUEUED, DELIVERED, ACKNOWLEDGED or DEAD_LETTER")
    p.add_argument("--filter", default="", help="AIP-160 filter, e.g. 'conversation_id = \"…\"'")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    p.set_defaults(handler=list_)

    p = isub.add_parser("get", parents=[common], help="show one message with its bodies")
    p.add_argument("name", help="inboundMessages/{id} or the id")
    p.add_argument("--raw", action="store_true", help="write the exact RFC 5322 bytes to stdout instead")
    p.set_defaults(handler=get)

    p = isub.add_parser("requeue", parents=[common], help="put a dead-lettered message back in its queue")
    p.add_argument("name", help="inboundMessages/{id} or the id")
    p.set_defaults(handler=requeue)


def tail(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    if bool(args.campaign) == bool(args.provider):
        raise UsageError("give a campaign, or --provider, not both")
    status = StatusLine()
    seen = acked = 0
    with mg.stream_inbound_mail(args.campaign, providers=args.provider, consumer=args.consumer,
                                max_in_flight=args.max_in_flight, ack_deadline_seconds=args.deadline) as stream:
        keeper = None if args.ack else _DeadlineKeeper(stream, args.deadline)
        try:
            for received in stream:
                status.clear()
                out.print(json.dumps(json_format.MessageToDict(received), separators=(",", ":")) if args.json
                          else output.inbound_line(received.message))
                out.file.flush()  # printed before acknowledged: a reader sees each at least once
                seen += 1
                if keeper:
                    keeper.hold(received.ack_id)
                else:
                    mg.ack_inbound_mail([received.ack_id])
                    acked += 1
                status.show(f"{seen} message{'s' if seen != 1 else ''}"
                            + (f", {acked} acknowledged" if args.ack else ", held (not acknowledged)"))
                if args.limit and seen >= args.limit:
                    break
        finally:
            status.clear()
            if keeper:
                keeper.stop()
    return OK


class _DeadlineKeeper:
    """Keeps the deliveries tail holds from expiring (an expiry counts as a failed
    attempt): their deadlines are extended every half deadline until tail stops."""

    def __init__(self, stream: InboundStream, deadline: int):
        self.stream, self.deadline = stream, deadline
        self._held: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailgate-tail-deadlines", daemon=True)
        self._thread.start()

    def hold(self, ack_id: str) -> None:
        with self._lock:
            self._held.append(ack_id)

    def _run(self) -> None:
        while not self._stop.wait(max(1.0, self.deadline / 2)):
            with self._lock:
                held = list(self._held)
            if held:
                self.stream.extend(held, self.deadline)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def list_(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    terms = [args.filter] if args.filter else []
    if args.campaign:
        terms.append(f"campaign = {json.dumps(args.campaign)}")
    if args.provider:
        terms.append(f'provider = "{mg.resolve(args.provider)}"')
    if args.state:
        terms.append(f"state = {args.state.upper()}")
    found = limited(mg.list_inbound_messages(" AND ".join(terms), page_size=page_size(args.limit)), args.limit)
    if args.json:
        out.print(output.to_json(found))
    elif found:
        output.inbound_table(out, found)
    else:
        out.print("no messages" + (" match" if terms else " received yet"))
    return OK


def get(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    m = mg.get_inbound_message(args.name, include_raw=args.raw)
    if args.raw and not args.json:
        out.file.flush()
        sys.stdout.buffer.write(m.raw)
        sys.stdout.buffer.flush()
    elif args.json:
        out.print(output.to_json(m))
    else:
        output.inbound_details(out, m)
    return OK


def requeue(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    m = mg.requeue_inbound_message(args.name)
    if args.json:
        out.print(output.to_json(m))
    else:
        state = output.enum_word(InboundMessage.State.DESCRIPTOR, m.state)
        out.print(f"requeued {m.name}: {state} on {m.campaign}")
    return OK
