"""Named store operations on providers. Each takes the caller's session and never
commits: the caller's transaction (Database.run) decides."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailgate.drivers.api import ProviderConfig

from .history import HistoryStore, state_changed
from .state import Cause, State, Status, StoredProvider
from ..clock import utcnow
from ..errors import NotFound, etag_mismatch, name_taken
from ..secrets import Sealed, SecretBox
from ..store.fast import Prepared
from ..store.models import ProviderRow, ProviderSecretRow


def name_key(display_name: str) -> str:
    return display_name.strip().casefold()


def secret_context(provider_id: str, name: str) -> str:
    return f"provider:{provider_id}:{name}"


def provider_fingerprints(session: Session, ids: Iterable[str]) -> dict[str, tuple]:
    """A value per provider that changes with every write to it: its version (every
    change of settings or state) and its sealed secrets (tokens the server renewed
    without a new version). Lets a reader keep a decoded provider and check in one
    cheap query that it is still what is stored. Deleted providers are absent."""
    found = {}
    for pid in ids:
        rows = _FINGERPRINT.fetchall(session, {"provider_id": pid})
        if rows:
            found[pid] = (rows[0][0], tuple(sorted((name, value.data if isinstance(value, Sealed) else bytes(value))
                                                   for _, name, value in rows if name is not None)))
    return found


_FINGERPRINT = Prepared(
    select(ProviderRow.version, ProviderSecretRow.name, ProviderSecretRow.value)
    .outerjoin(ProviderSecretRow, ProviderSecretRow.provider_id == ProviderRow.id)
    .where(ProviderRow.id == bindparam("provider_id")))


class ProviderStore:
    def __init__(self, session: Session, box: SecretBox):
        self.session = session
        self.box = box

    # -- reads
    def get(self, provider_id: str) -> StoredProvider:
        return self._load(self._row(provider_id))

    def get_with_fingerprint(self, provider_id: str) -> tuple[StoredProvider, tuple]:
        """The provider and its fingerprint (provider_fingerprints), read together."""
        stored = self.get(provider_id)
        return stored, provider_fingerprints(self.session, [provider_id])[provider_id]

    def is_name_taken(self, display_name: str, except_id: str | None = None) -> bool:
        found = self.session.scalar(
            select(ProviderRow.id).where(ProviderRow.name_key == name_key(display_name)))
        return found is not None and found != except_id

    def list(self, filters: dict[str, Any], after: tuple[datetime, str] | None,
             limit: int, where: Sequence[ColumnElement[bool]] = ()) -> list[StoredProvider]:
        q = select(ProviderRow).where(*where).order_by(ProviderRow.create_time, ProviderRow.id).limit(limit)
        for column, value in filters.items():
            q = q.where(getattr(ProviderRow, column) == value)
        if after:
            t, i = after
            q = q.where((ProviderRow.create_time > t)
                        | ((ProviderRow.create_time == t) & (ProviderRow.id > i)))
        return [self._load(row) for row in self.session.scalars(q).unique()]

    # -- writes
    def insert(self, config: ProviderConfig, status: Status) -> StoredProvider:
        assert config.id
        if self.is_name_taken(config.display_name):
            raise name_taken(config.display_name)
        now = utcnow()
        row = ProviderRow(id=config.id, state=status.state.value, state_cause=status.cause.value,
                          state_reason=status.reason, state_time=now, create_time=now, update_time=now, version=1)
        self._write(row, config)
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError:  # lost a race with a concurrent create of the same name
            raise name_taken(config.display_name) from None
        HistoryStore(self.session).add([state_changed(row.id, None, status.state, status.cause, status.reason, now)])
        return self._load(row)

    def update(self, config: ProviderConfig, expected_version: int | None,
               status: Status | None = None) -> StoredProvider:
        assert config.id
        row = self._row(config.id, expected_version)
        if self.is_name_taken(config.display_name, except_id=config.id):
            raise name_taken(config.display_name)
        self._write(row, config)
        if status:
            self._set_state(row, status)
        row.version += 1
        row.update_time = utcnow()
        self.session.flush()
        return self._load(row)

    def set_state(self, provider_id: str, status: Status,
                  only_if: Callable[[State, Cause], bool] | None = None) -> tuple[StoredProvider, bool]:
        """The provider with its new status, and whether it changed. `only_if(state,
        cause)` of the stored provider decides, in this transaction, whether to change."""
        row = self._row(provider_id, lock=only_if is not None)
        current = (row.state, row.state_cause, row.state_reason)
        allowed = only_if is None or only_if(State(row.state), Cause(row.state_cause))
        changed = allowed and current != (status.state.value, status.cause.value, status.reason)
        if changed:
            self._set_state(row, status)
            row.version += 1
            self.session.flush()
        return self._load(row), changed

    def save_secrets(self, provider_id: str, changes: Mapping[str, str]) -> None:
        """Stores secrets the server itself renewed (a rotated refresh token). Not a
        change of the provider: the version, and so the admin's etag, stay."""
        row = self._row(provider_id)
        self._seal(row, changes)
        self.session.flush()

    def delete(self, provider_id: str, expected_version: int | None) -> None:
        self.session.delete(self._row(provider_id, expected_version))
        self.session.flush()

    # -- helpers
    def _row(self, provider_id: str, expected_version: int | None = None, lock: bool = False) -> ProviderRow:
        # Lock the provider row only (its secrets come through an outer join).
        locking = {"of": ProviderRow} if expected_version is not None or lock else None
        row = self.session.get(ProviderRow, provider_id, with_for_update=locking)
        if row is None:
            raise NotFound(f"provider {provider_id!r} does not exist", metadata={"provider": provider_id})
        if expected_version is not None and row.version != expected_version:
            raise etag_mismatch(provider_id, row.version)
        return row

    def _set_state(self, row: ProviderRow, status: Status) -> None:
        """The new status, and its event in the provider's history when it differs."""
        before = State(row.state), row.state_cause, row.state_reason
        row.state, row.state_cause, row.state_reason = status.state.value, status.cause.value, status.reason
        row.state_time = utcnow()
        if before != (status.state, status.cause.value, status.reason):
            HistoryStore(self.session).add([state_changed(row.id, before[0], status.state, status.cause,
                                                          status.reason, row.state_time)])

    def _write(self, row: ProviderRow, c: ProviderConfig) -> None:
        row.display_name = c.display_name.strip()
        row.name_key = name_key(c.display_name)
        row.type = c.type
        row.account = c.account
        row.from_name = c.from_name
        row.receive_emails = c.receive_emails
        row.active_reference = c.active_reference
        row.reply_to = list(c.reply_to)
        row.campaign = c.campaign
        row.settings = dict(c.settings)
        existing = {s.name: s for s in row.secrets}
        for name in set(existing) - set(c.secrets):
            row.secrets.remove(existing[name])
        self._seal(row, c.secrets)

    def _seal(self, row: ProviderRow, secrets: Mapping[str, str]) -> None:
        existing = {s.name: s for s in row.secrets}
        for name, value in secrets.items():
            sealed = self.box.seal(value, secret_context(row.id, name))
            if name in existing:
                existing[name].value = sealed
            else:
                row.secrets.append(ProviderSecretRow(name=name, value=sealed))

    def _load(self, row: ProviderRow) -> StoredProvider:
        secrets = {s.name: self.box.open(s.value, secret_context(row.id, s.name)) for s in row.secrets}
        config = ProviderConfig(
            id=row.id, type=row.type, display_name=row.display_name, account=row.account,
            from_name=row.from_name, receive_emails=row.receive_emails,
            active_reference=row.active_reference, reply_to=tuple(row.reply_to),
            campaign=row.campaign, settings=row.settings, secrets=secrets)
        return StoredProvider(config=config, state=State(row.state), cause=Cause(row.state_cause),
                              state_reason=row.state_reason,
                              state_time=row.state_time, create_time=row.create_time,
                              update_time=row.update_time, version=row.version)
