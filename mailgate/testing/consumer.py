"""A StreamInboundMail client for tests: one thread reads deliveries, a queue
carries the requests (acknowledgements, deadline changes) back on the stream."""
from __future__ import annotations

import queue
import threading

import grpc

from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc


class Consumer:
    """A StreamInboundMail client: a thread reading deliveries, a queue for requests."""

    def __init__(self, server, *, campaign="billing", providers=(), max_in_flight=10, deadline=10, name="c",
                 include_raw=False, max_in_flight_bytes=0):
        self.stub = inbound_service_pb2_grpc.InboundServiceStub(server.channel)
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(ipb.StreamInboundMailRequest(
            campaign=campaign, providers=list(providers), consumer=name, max_in_flight=max_in_flight,
            ack_deadline_seconds=deadline, include_raw=include_raw, max_in_flight_bytes=max_in_flight_bytes))
        self.received: queue.Queue = queue.Queue()
        self.call = self.stub.StreamInboundMail(iter(self.requests.get, None))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                for r in response.received_messages:
                    self.received.put(r)
        except grpc.RpcError as e:
            self.received.put(e)

    def take(self, n: int = 1, timeout: float = 5.0) -> list[ipb.ReceivedInboundMessage]:
        out = []
        for _ in range(n):
            item = self.received.get(timeout=timeout)
            if isinstance(item, grpc.RpcError):
                raise item
            out.append(item)
        return out

    def take_all(self, wait: float = 0.5) -> list[ipb.ReceivedInboundMessage]:
        """Whatever arrives within `wait` seconds."""
        out = []
        try:
            while True:
                item = self.received.get(timeout=wait)
                if isinstance(item, grpc.RpcError):
                    raise item
                out.append(item)
        except queue.Empty:
            return out

    def nothing(self, wait: float = 0.5) -> bool:
        try:
            self.received.get(timeout=wait)
            return False
        except queue.Empty:
            return True

    def ack(self, *received) -> None:
        """On the stream: committed soon after, not when this returns."""
        self.requests.put(ipb.StreamInboundMailRequest(ack_ids=[r.ack_id for r in received]))

    def ack_committed(self, *received) -> None:
        """With AckInboundMail: committed when this returns."""
        self.stub.AckInboundMail(ipb.AckInboundMailRequest(ack_ids=[r.ack_id for r in received]))

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.thread.join(5)
