"""Wake-ups across replicas: NOTIFY inside the committing transaction, LISTEN on
another connection, against the machine's PostgreSQL."""
from __future__ import annotations

import queue

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from mailgate.server.inbound.wakeups import Listener, notify
from mailgate.testing.harness import POSTGRES_URL


@pytest.fixture
def engine():
    engine = create_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


def test_a_committed_notification_reaches_a_listener_and_a_rolled_back_one_does_not(engine):
    heard: queue.Queue = queue.Queue()
    listener = Listener(engine, heard.put)
    listener.start()
    try:
        with Session(engine) as s:
            notify(s, ["campaign:rolled back"])
            s.rollback()
        with Session(engine) as s, s.begin():
            notify(s, ["campaign:support", "provider:p-1"])
        assert heard.get(timeout=5) == ["campaign:support", "provider:p-1"]
        assert heard.empty()
    finally:
        listener.close()


def test_more_topics_than_one_notification_holds_all_arrive(engine):
    """An acknowledgement of many streams' deliveries tells each of them: PostgreSQL
    takes payloads under 8000 bytes, so the topics travel in several."""
    heard: queue.Queue = queue.Queue()
    listener = Listener(engine, heard.put)
    listener.start()
    topics = [f"holder:{n:016x}" for n in range(1000)]  # ~27 KB as one payload
    try:
        with Session(engine) as s, s.begin():
            notify(s, topics)
        got: list[str] = []
        while len(got) < len(topics):
            got += heard.get(timeout=5)
        assert got == topics and heard.empty()
    finally:
        listener.close()


def test_notify_is_a_no_op_on_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with Session(engine) as s, s.begin():
        notify(s, ["campaign:support"])  # one process: nobody else to tell
    assert statements == []
    engine.dispose()


@pytest.fixture
def replicas(tmp_path, smtp_server, mail_ca):
    """Two mailgate servers, A and B, on one PostgreSQL schema, and a provider of
    campaign "replicas" created through A. B's own sweep for expired leases is pushed
    out of the way: only a notification can wake B's consumers in time."""
    from mailgate.testing.harness import PostgresSchema, ServerThread, make_settings, random_key
    from mailgate.v1 import provider_pb2
    from mailgate.v1 import provider_service_pb2 as pb

    schema = PostgresSchema()
    key = random_key()
    servers = []
    try:
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, schema.url)
            (tmp_path / name).mkdir()
            settings.key_file.write_text(key)
            servers.append(ServerThread(settings).start())
        a, b = servers
        b.app.inbound.settings.sweep_interval = 60
        smtp = smtp_server("STARTTLS")
        p = a.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name="Desk", type="smtp_imap", account="agent@example.test", campaign="replicas",
            smtp_imap=provider_pb2.SmtpImapSettings(
                password="s3cret-agent", ca_certificates_pem=mail_ca.ca_pem,
                smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port,
                                           security=provider_pb2.SECURITY_STARTTLS)))))
        yield a, b, p.name.removeprefix("providers/")
    finally:
        for server in servers:
            server.stop()
        schema.drop()


def commit_through(server, provider_id: str, messages: list[tuple[int, bytes]]) -> None:
    """What A's mailbox watcher does when it has fetched messages."""
    import asyncio
    server.call(asyncio.to_thread(server.app.inbound.commit, provider_id, "INBOX", 1, messages))


def test_a_consumer_on_one_replica_gets_mail_another_replica_committed_at_once(replicas):
    """Mail queued through A wakes B's consumer by notification."""
    from mailgate.testing.consumer import Consumer

    a, b, provider_id = replicas
    consumer = Consumer(b, campaign="replicas")
    try:
        assert consumer.nothing(wait=0.5)  # B's stream is waiting
        commit_through(a, provider_id, [(1, b"Subject: from replica a\r\nMessage-ID: <r@example.test>\r\n\r\nHi\r\n")])
        [r] = consumer.take(timeout=5)
        assert r.message.subject == "from replica a"
    finally:
        consumer.close()


def test_acks_sent_to_another_replica_free_the_stream_window(replicas):
    """A consumer streaming from B that acknowledges through A's AckInboundMail gets
    the next messages at once: A tells B which stream's leases it acknowledged."""
    from mailgate.testing.consumer import Consumer
    from mailgate.v1 import inbound_service_pb2 as ipb, inbound_service_pb2_grpc

    a, b, provider_id = replicas
    commit_through(a, provider_id, [(n, f"Subject: m{n}\r\nMessage-ID: <m{n}@example.test>\r\n\r\nHi\r\n".encode())
                                    for n in range(1, 5)])
    consumer = Consumer(b, campaign="replicas", max_in_flight=2)
    try:
        first = consumer.take(2)
        assert consumer.nothing(wait=0.3)  # the window is full
        inbound_service_pb2_grpc.InboundServiceStub(a.channel).AckInboundMail(
            ipb.AckInboundMailRequest(ack_ids=[r.ack_id for r in first]))
        second = consumer.take(2, timeout=5)
        assert [r.message.subject for r in first + second] == ["m1", "m2", "m3", "m4"]
    finally:
        consumer.close()


def test_a_token_revoked_on_one_replica_is_refused_on_the_other_at_once(replicas):
    import time

    import grpc

    from mailgate.testing.rpc import expect_error
    from mailgate.v1 import provider_service_pb2 as pb, provider_service_pb2_grpc
    from mailgate.v1 import token_service_pb2, token_service_pb2_grpc

    a, b, _ = replicas
    made = token_service_pb2_grpc.TokenServiceStub(a.channel).CreateToken(token_service_pb2.CreateTokenRequest(
        token=token_service_pb2.Token(display_name="dialer", permissions=["providers.read"])))
    with b.open_channel(made.secret) as channel:
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        assert len(stub.ListProviders(pb.ListProvidersRequest()).providers) == 1  # B knows the token now
        token_service_pb2_grpc.TokenServiceStub(a.channel).DeleteToken(
            token_service_pb2.DeleteTokenRequest(name=made.token.name))
        # B caches a token for a minute: only the notification can make it let go sooner
        deadline = time.monotonic() + 10
        while True:
            try:
                stub.ListProviders(pb.ListProvidersRequest())
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() < deadline, "B still accepts a token revoked on A"
            time.sleep(0.05)
        assert expect_error(lambda: stub.ListDrivers(pb.ListDriversRequest())).code == grpc.StatusCode.UNAUTHENTICATED
