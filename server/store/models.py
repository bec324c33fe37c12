"""Tables. Alembic owns the schema (migrations/); these typed models describe it."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text,
                        UniqueConstraint, select, types)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from ..secrets import Sealed

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(types.TypeDecorator[datetime]):
    """Timezone-aware UTC in, aware UTC out, on SQLite (which keeps no zone) too."""

    impl = types.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class SealedBytes(types.TypeDecorator[Sealed]):
    """A secret column: accepts only `Sealed` ciphertext, never plaintext."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sealed | None, dialect: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, Sealed):
            raise TypeError("secret columns take Sealed values only")
        return value.data

    def process_result_value(self, value: bytes | None, dialect: Any) -> Sealed | None:
        return None if value is None else Sealed(bytes(value))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON(),
                           list[dict[str, Any]]: JSON()}


class ProviderRow(Base):
    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # casefolded display_name: uniqueness is case-insensitive on every engine
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    account: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(String(200), default="")
    receive_emails: Mapped[bool] = mapped_column(default=False)
    active_reference: Mapped[bool] = mapped_column(default=False)
    reply_to: Mapped[list[str]] = mapped_column(default=list)
    campaign: Mapped[str] = mapped_column(String(200), default="", index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(8), index=True)
    state_cause: Mapped[str] = mapped_column(String(32))  # state.Cause: code branches on it
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_time: Mapped[datetime]
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    # bumped on every write; the etag is derived from it
    version: Mapped[int] = mapped_column(default=1)

    secrets: Mapped[list["ProviderSecretRow"]] = relationship(
        back_populates="provider", cascade="all, delete-orphan", passive_deletes=True,
        lazy="joined")  # one query: a provider is always read with its secrets


class ProviderSecretRow(Base):
    __tablename__ = "provider_secrets"

    provider_id: Mapped[str] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Sealed] = mapped_column(SealedBytes)

    provider: Mapped[ProviderRow] = relationship(back_populates="secrets")


class OutboundRow(Base):
    """The durable outbox: a message is committed here before its first attempt."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        UniqueConstraint("provider_id", "request_id", name="uq_outbound_messages_request"),
        Index("ix_outbound_messages_due", "state", "next_attempt_time"),
        Index("ix_outbound_messages_sent", "provider_id", "sent_time"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # No foreign key: the record of what was sent outlives a deleted provider.
    provider_id: Mapped[str] = mapped_column(String(36), index=True)
    request_id: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    conversation_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(8))
    mail_from: Mapped[str] = mapped_column(String(320))
    to: Mapped[list[str]] = mapped_column(default=list)
    cc: Mapped[list[str]] = mapped_column(default=list)
    bcc: Mapped[list[str]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # metadata only
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the MIME message exactly as sent
    size_bytes: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_time: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    # Who holds (or last held) the lease: set anew by every claim, so the result of
    # an attempt whose lease was taken over is never recorded (OutboxStore.write).
    lease_token: Mapped[str | None] = mapped_column(String(36))
    last_code: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_transient: Mapped[bool] = mapped_column(default=False)
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    sent_time: Mapped[datetime | None]


class MessageRefRow(Base):
    """Every Message-ID mailgate knows (sent, and later received), for threading."""

    __tablename__ = "message_refs"

    message_id: Mapped[str] = mapped_column(String(998), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(36), index=True)
    # the message's own References chain, oldest first, without itself
    references: Mapped[list[str]] = mapped_column(default=list)
    create_time: Mapped[datetime]


class InboundRawRow(Base):
    """The bytes of an inbound message exactly as fetched, in a table of their own:
    written once, while the queue entry is written again at every claim and ack
    (SQLite rewrites a whole row on UPDATE, the mail in it included)."""

    __tablename__ = "inbound_raw"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the InboundRow's id
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class InboundRow(Base):
    """A campaign queue entry: a message as fetched (its bytes in InboundRawRow), and
    its delivery state."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        # one row per message of a mailbox generation (IMAP UIDVALIDITY)
        UniqueConstraint("provider_id", "folder", "uidvalidity", "uid", name="uq_inbound_messages_uid"),
        Index("ix_inbound_messages_dedup", "provider_id", "message_id", "content_hash"),
        Index("ix_inbound_messages_queue", "campaign", "state", "seq"),
        Index("ix_inbound_messages_provider_queue", "provider_id", "state", "seq"),  # claims by provider
    )

    # arrival order: consumers get a campaign's messages in this order
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    provider_id: Mapped[str] = mapped_column(String(36), index=True)
    campaign: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(200))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(String(998), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(String(36), index=True)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the parsed envelope
    automatic: Mapped[bool] = mapped_column(default=False)
    oversized: Mapped[bool] = mapped_column(default=False)
    size_bytes: Mapped[int]
    # Read only where asked for (options(undefer(InboundRow.raw))): a listing does without.
    raw: Mapped[bytes] = column_property(select(InboundRawRow.raw).where(InboundRawRow.id == id)
                                         .correlate_except(InboundRawRow).scalar_subquery(), deferred=True)
    state: Mapped[str] = mapped_column(String(12))
    delivery_count: Mapped[int] = mapped_column(default=0)
    # deliveries that failed: given back (a deadline of 0) or let expire; a consumer that
    # went away gave its deliveries back untried (see InboundSettings.dead_letter_after)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_consumer: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    receive_time: Mapped[datetime]
    ack_time: Mapped[datetime | None]


class MailboxPositionRow(Base):
    """How far a watched mailbox has been committed to the queue."""

    __tablename__ = "mailbox_positions"

    provider_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    folder: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)


class AuthorizationRow(Base):
    """A pending OAuth sign-in (ActivateProvider → CompleteAuthorization). Keyed by
    a digest of the state, so the table alone cannot answer a redirect; the flow
    (PKCE verifier, nonce) is sealed. Kept after use to tell "used" from "unknown"."""

    __tablename__ = "authorizations"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"), index=True)
    flow: Mapped[Sealed] = mapped_column(SealedBytes)
    create_time: Mapped[datetime]
    expire_time: Mapped[datetime]
    use_time: Mapped[datetime | None]


class MailboxIdRow(Base):
    """A number for a message that its source knows by an opaque id (a POP3 UIDL, a
    file name): the queue's mailbox position counts in these numbers, so a message is
    handed again after a crash until its number is committed, and never after."""

    __tablename__ = "mailbox_ids"

    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True)
    folder: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(255), primary_key=True)  # RFC 1939 UIDLs: 1 to 70 characters
    number: Mapped[int] = mapped_column(BigInteger)


class ApiTokenRow(Base):
    """An API token: only the SHA-256 of its secret is kept, so the table alone
    cannot authenticate anyone."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    permissions: Mapped[list[str]] = mapped_column(default=list)
    campaigns: Mapped[list[str]] = mapped_column(default=list)
    providers: Mapped[list[str]] = mapped_column(default=list)  # provider ids
    create_time: Mapped[datetime]
    expire_time: Mapped[datetime | None]
    last_use_time: Mapped[datetime | None]


class ProviderEventRow(Base):
    """A provider's history (server/providers/history.py): what happened to it, newest
    first by seq. Pruned by age and capped per provider and type."""

    __tablename__ = "provider_events"
    __table_args__ = (
        Index("ix_provider_events_list", "provider_id", "seq"),
        Index("ix_provider_events_type", "provider_id", "type", "seq"),  # the filter, and the cap
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime] = mapped_column(index=True)  # the retention's prune
    previous_state: Mapped[str] = mapped_column(String(8), default="")
    state: Mapped[str] = mapped_column(String(8), default="")
    cause: Mapped[str] = mapped_column(String(32), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    check_id: Mapped[str] = mapped_column(String(64), default="")
    error_code: Mapped[str] = mapped_column(String(32), default="")
    count: Mapped[int] = mapped_column(default=1)
