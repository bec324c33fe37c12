"""Migrations that move data: run on every engine with rows in the tables."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from mailgate.server.store.db import Database, alembic_config
from mailgate.server.inbound.numbers import MailboxIds
from mailgate.server.inbound.store import InboundStore


def test_inbound_bytes_move_to_a_table_of_their_own_and_back(mailgate_database_url):
    db = Database(mailgate_database_url)
    config = alembic_config(db.engine)
    command.upgrade(config, "0006")
    raws = {str(uuid.uuid4()): bytes(range(256)) * 40 + b"\r\n.\r\n" + bytes([i]) for i in range(3)}
    with db.engine.begin() as c:
        t = sa.Table("inbound_messages", sa.MetaData(), autoload_with=c)
        c.execute(t.insert(), [dict(
            id=mid, provider_id=str(uuid.uuid4()), campaign="support", folder="INBOX", uidvalidity=7, uid=i + 1,
            message_id=f"<{i}@example.test>", content_hash="h", conversation_id=str(uuid.uuid4()), headers={},
            automatic=False, oversized=False, size_bytes=len(raw), raw=raw, state="QUEUED", delivery_count=0,
            receive_time=datetime.now(timezone.utc)) for i, (mid, raw) in enumerate(raws.items())])

    command.upgrade(config, "head")
    with db.engine.connect() as c:
        assert "raw" not in {col["name"] for col in sa.inspect(c).get_columns("inbound_messages")}
    assert {mid: db.transaction(lambda s, mid=mid: InboundStore(s).get(mid).raw) for mid in raws} == raws

    command.downgrade(config, "0006")
    with db.engine.connect() as c:
        t = sa.Table("inbound_messages", sa.MetaData(), autoload_with=c)
        assert dict(c.execute(sa.select(t.c.id, t.c.raw)).all()) == raws
        assert "inbound_raw" not in sa.inspect(c).get_table_names()
    db.close()


def test_existing_providers_get_the_cause_their_reason_was_written_for(mailgate_database_url):
    db = Database(mailgate_database_url)
    config = alembic_config(db.engine)
    command.upgrade(config, "0007")
    written = {  # (state, reason) -> the cause it must get
        ("GREEN", "credentials checked at creation"): "CHECKS_PASSED",
        ("GREEN", "mailbox reachable again"): "RECOVERED",
        ("GREY", "waiting for authorization: call ActivateProvider"): "AUTHORIZATION_PENDING",
        ("RED", "re-authorization required: invalid_grant: revoked"): "AUTHORIZATION_LOST",
        ("RED", "receiving stopped: IMAP authentication failed at imap.example.test:993"): "MAILBOX_UNREACHABLE",
        ("RED", "sending failed: the SMTP server refused the login: 535 no"): "LOGIN_REFUSED",
        ("RED", "sign-in refused: access_denied"): "AUTHORIZATION_FAILED",
        ("RED", "signed in as b@example.test, the provider's account is a@example.test: sign in as a@example.test"):
            "AUTHORIZATION_FAILED",
        ("RED", "signed in as a@example.test, but: IMAP authentication failed at x:1"): "CHECKS_FAILED",
        ("RED", "activation failed: cannot connect to the SMTP server x:1"): "CHECKS_FAILED",
    }
    with db.engine.begin() as c:
        ids = {(state, reason): _provider_row(c, state=state, state_reason=reason) for state, reason in written}

    command.upgrade(config, "head")
    with db.engine.connect() as c:
        t = sa.Table("providers", sa.MetaData(), autoload_with=c)
        causes = dict(c.execute(sa.select(t.c.id, t.c.state_cause)).all())
    assert {key: causes[pid] for key, pid in ids.items()} == written

    command.downgrade(config, "0007")
    with db.engine.connect() as c:
        assert "state_cause" not in {col["name"] for col in sa.inspect(c).get_columns("providers")}
    db.close()


def test_pop3_uidl_numbers_move_to_mailbox_ids_and_back(mailgate_database_url):
    db = Database(mailgate_database_url)
    config = alembic_config(db.engine)
    command.upgrade(config, "0008")
    numbered = {"uidl-a": 1, "uidl-b": 2, "x" * 70: 5}
    with db.engine.begin() as c:
        pid = _provider_row(c, state="GREEN", state_cause="CHECKS_PASSED", state_reason="")
        uidls = sa.Table("pop3_uidls", sa.MetaData(), autoload_with=c)
        c.execute(uidls.insert(), [dict(provider_id=pid, uidl=u, uid=n) for u, n in numbered.items()])

    command.upgrade(config, "head")
    # The numbers a POP3 source gets are the ones it had; a new id comes after them.
    assert db.transaction(lambda s: MailboxIds(s).numbers(pid, "INBOX", [*numbered, "uidl-new"])) == {
        **numbered, "uidl-new": 6}

    command.downgrade(config, "0008")
    with db.engine.connect() as c:
        uidls = sa.Table("pop3_uidls", sa.MetaData(), autoload_with=c)
        assert dict(c.execute(sa.select(uidls.c.uidl, uidls.c.uid)).all()) == {**numbered, "uidl-new": 6}
        assert "mailbox_ids" not in sa.inspect(c).get_table_names()
    db.close()


def _provider_row(c: sa.Connection, **values) -> str:
    """Inserts a provider row as the schema of the moment has it; its id."""
    pid, now = str(uuid.uuid4()), datetime.now(timezone.utc)
    t = sa.Table("providers", sa.MetaData(), autoload_with=c)
    c.execute(t.insert().values(
        id=pid, display_name=pid, name_key=pid, type="smtp_imap", account="a@example.test", from_name="",
        receive_emails=True, active_reference=False, reply_to=[], campaign="", settings={}, state_time=now,
        create_time=now, update_time=now, version=1, **values))
    return pid
