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


def test_notify_is_a_no_op_on_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with Session(engine) as s, s.begin():
        notify(s, ["campaign:support"])  # one process: nobody else to tell
    assert statements == []
    engine.dispose()


def test_a_consumer_on_one_replica_gets_mail_another_replica_committed_at_once(tmp_path, smtp_server, mail_ca):
    """Two mailgate processes on one PostgreSQL: mail queued through A wakes B's consumer
    by notification; B's own sweep for expired leases is pushed out of the way."""
    import asyncio

    from mailgate.testing.consumer import Consumer
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
        b.app.inbound.settings.sweep_interval = 60  # only a notification can wake B in time
        smtp = smtp_server("STARTTLS")
        p = a.stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name="Desk", type="smtp_imap", account="agent@example.test", campaign="replicas",
            smtp_imap=provider_pb2.SmtpImapSettings(
                password="s3cret-agent", ca_certificates_pem=mail_ca.ca_pem,
                smtp=provider_pb2.Endpoint(host=smtp.host, port=smtp.port,
                                           security=provider_pb2.SECURITY_STARTTLS)))))
        consumer = Consumer(b, campaign="replicas")
        try:
            assert consumer.nothing(wait=0.5)  # B's stream is waiting
            raw = b"Subject: from replica a\r\nMessage-ID: <r@example.test>\r\n\r\nHi\r\n"
            a.call(asyncio.to_thread(a.app.inbound.commit, p.name.removeprefix("providers/"), "INBOX", 1,
                                     [(1, raw)]))
            [r] = consumer.take(timeout=5)
            assert r.message.subject == "from replica a"
        finally:
            consumer.close()
    finally:
        for server in servers:
            server.stop()
        schema.drop()
