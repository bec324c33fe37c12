"""`mailgate keys rotate`: every stored secret re-sealed under a new key.

1. With a key file, a new key is put first in it (the old ones stay after it, so
   everything not yet re-sealed still opens); running servers read the file again
   and seal with the new key from then on. With MAILGATE_SECRET_KEY the operator
   lists the keys, the new one first, and nothing is generated.
2. Every sealed value (providers' secrets, pending sign-ins) not under the current
   key is re-sealed, in batches, each batch one transaction whose rows are locked,
   so a server writing the same secret meanwhile is never overwritten.
3. Keys that no value uses any more are reported; `--retire` drops them from the
   key file (only once every replica seals with the new key).

Interrupted anywhere, nothing is lost: the file always holds every key a value may
be sealed with, and running the command again finishes the re-sealing under the
current key instead of making another.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .providers.authorizations import flow_context
from .providers.store import secret_context
from .secrets import ENV_KEY, Sealed, SecretBox, key_id, new_key, read_key_file, write_key_file
from .store.db import Database
from .store.models import AuthorizationRow, ProviderSecretRow

log = logging.getLogger("mailgate.keys")

BATCH = 200

# Each table with sealed values: its model, the sealed column, what a value is bound to.
_TABLES: list[tuple[Any, str, Callable[[Any], str]]] = [
    (ProviderSecretRow, "value", lambda r: secret_context(r.provider_id, r.name)),
    (AuthorizationRow, "flow", lambda r: flow_context(r.state_hash)),
]


@dataclass
class Rotation:
    key_id: str  # the current key's id (hex)
    generated: bool  # a new key was made (else an interrupted rotation was finished, or env keys used)
    resealed: int = 0
    unused: list[str] = field(default_factory=list)  # ids of keys no value uses
    retired: list[str] = field(default_factory=list)


def rotate(database_url: str, key_file: Path, *, retire: bool = False, batch: int = BATCH,
           progress: Callable[[int, int], None] = lambda done, total: None) -> Rotation:
    db = Database(database_url)
    try:
        db.upgrade()
        from_env = bool(os.environ.get(ENV_KEY))
        if from_env:
            box = SecretBox.from_environment(key_file)
            generated, left = False, 0
        else:
            keys = read_key_file(key_file) if key_file.exists() else []
            box = SecretBox(keys) if keys else None
            left = db.transaction(lambda s: _count_stale(s, box)) if box else 0
            generated = not left  # else an earlier rotation is finished under its key
            if generated:  # a new key, first in the file
                keys = [new_key(), *keys]
                write_key_file(key_file, keys)
                box = SecretBox(keys)
                log.info("new key %s written first in %s", box.key_id.hex(), key_file)
        result = Rotation(box.key_id.hex(), generated)
        total = left or db.transaction(lambda s: _count_stale(s, box))  # counted already when resuming
        progress(0, total)
        while True:
            done = db.transaction(lambda s: _reseal_batch(s, box, batch))
            if not done:
                break
            result.resealed += done
            progress(result.resealed, max(total, result.resealed))
        used = db.transaction(_key_ids_in_use)
        result.unused = [k.hex() for k in box.key_ids if k not in used and k != box.key_id]
        if retire and result.unused and not from_env:
            keep = [k for k in read_key_file(key_file) if key_id(k).hex() not in result.unused]
            write_key_file(key_file, keep)
            result.retired = result.unused
        return result
    finally:
        db.close()


def _stale(model: Any, column: str, box: SecretBox) -> Any:
    # bytes 3-6 of a sealed value are its key's id (secrets.py)
    return func.substr(getattr(model, column), 3, 4) != box.key_id


def _count_stale(s: Session, box: SecretBox) -> int:
    return sum(s.scalar(select(func.count()).select_from(model).where(_stale(model, column, box))) or 0
               for model, column, _ in _TABLES)


def _reseal_batch(s: Session, box: SecretBox, batch: int) -> int:
    """Re-seals up to `batch` values not under the current key; how many it did."""
    done = 0
    for model, column, context in _TABLES:
        rows = s.scalars(select(model).where(_stale(model, column, box)).limit(batch - done)
                         .with_for_update()).all()
        for row in rows:
            sealed: Sealed = getattr(row, column)
            setattr(row, column, box.seal(box.open(sealed, context(row)), context(row)))
        done += len(rows)
        if done >= batch:
            break
    return done


def _key_ids_in_use(s: Session) -> set[bytes]:
    used: set[bytes] = set()
    for model, column, _ in _TABLES:
        for (value,) in s.execute(select(func.substr(getattr(model, column), 3, 4)).distinct()):
            used.add(bytes(value))
    return used
