"""Sealing secrets at rest: AES-256-GCM with keys from the environment or a key file.

Sealed format: b"v1" | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag.
The associated data binds a ciphertext to its owner (provider id and secret
name), so a sealed password copied onto another row does not open.

There may be several keys (a rotation under way, see keys.py): the first seals,
every one opens what names its id. A key file is one base64 key per line, the
current one first; MAILGATE_SECRET_KEY lists them separated by commas. A running
server reads its key file again when it changes, so it seals with the new key and
opens what a rotation re-sealed without a restart.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets as _random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("mailgate.secrets")

ENV_KEY = "MAILGATE_SECRET_KEY"
_VERSION = b"v1"


class SecretKeyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sealed:
    """Ciphertext. The store's SealedBytes column accepts only this type, so
    plaintext cannot be written to a secret column by mistake."""

    data: bytes


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


def sealed_with(sealed: Sealed) -> bytes:
    """The id of the key a value was sealed with."""
    return sealed.data[2:6]


class SecretBox:
    RELOAD_SECONDS = 1.0  # how often a key file is looked at for a rotation's new key

    def __init__(self, keys: bytes | Sequence[bytes], key_file: Path | None = None):
        self._key_file = key_file
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._checked = time.monotonic()
        self._use([keys] if isinstance(keys, bytes) else list(keys))

    def _use(self, keys: list[bytes]) -> None:
        if not keys or any(len(k) != 32 for k in keys):
            raise SecretKeyError("a secret key must be 32 bytes (base64: 44 characters)")
        self._aeads = {key_id(k): AESGCM(k) for k in keys}
        self.key_id = key_id(keys[0])
        self.key_ids = [key_id(k) for k in keys]
        # Keys for other purposes come from the current key, never the sealing key itself.
        self._root = hmac.digest(keys[0], b"mailgate derived keys v1", "sha256")

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id.hex()})"

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key of its own for `purpose` (e.g. "page-tokens"), the same on every
        replica with this secret key; knowing it reveals neither the secret key nor
        another purpose's key."""
        return hmac.digest(self._root, purpose.encode(), "sha256")

    def seal(self, plaintext: str, context: str) -> Sealed:
        self._reload(force=False)
        nonce = _random.token_bytes(12)
        ct = self._aeads[self.key_id].encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(_VERSION + self.key_id + nonce + ct)

    def open(self, sealed: Sealed, context: str) -> str:
        data = sealed.data
        if data[:2] == _VERSION and data[2:6] not in self._aeads:
            self._reload(force=True)  # re-sealed by a rotation since we read the file
        aead = self._aeads.get(data[2:6]) if data[:2] == _VERSION else None
        if aead is None:
            raise SecretKeyError("secret sealed with another key: is MAILGATE_SECRET_KEY the one "
                                 "this database was created with?")
        return aead.decrypt(data[6:18], data[18:], context.encode()).decode()

    def _reload(self, force: bool) -> None:
        """Reads the key file again if it changed (at most once a second unless forced)."""
        if self._key_file is None or (not force and time.monotonic() - self._checked < self.RELOAD_SECONDS):
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                stamp = self._key_file.stat().st_mtime_ns
                if stamp == self._stamp:
                    return
                keys = read_key_file(self._key_file)
            except (OSError, SecretKeyError) as e:  # mid-write: keep what we have
                log.warning("cannot read the key file %s again (%s); keeping the keys in use", self._key_file, e)
                return
            if self._stamp is not None and key_id(keys[0]) != self.key_id:
                log.info("key file %s changed: sealing with key %s", self._key_file, key_id(keys[0]).hex())
            self._stamp = stamp
            self._use(keys)

    @classmethod
    def from_environment(cls, key_file: Path) -> "SecretBox":
        """MAILGATE_SECRET_KEY (base64 of 32 bytes; several comma-separated during a
        rotation, the current one first) wins; else the key file, created with mode
        0600 on first run so the embedded default needs no set-up."""
        env = os.environ.get(ENV_KEY)
        if env:
            return cls([_decode(k.strip(), ENV_KEY) for k in env.split(",") if k.strip()])
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(AESGCM.generate_key(256)).decode() + "\n")
            log.warning("created secret key file %s (mode 0600): back it up with the database; "
                        "without it stored passwords cannot be read", key_file)
        mode = key_file.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("secret key file %s is readable by others (mode %o): chmod 600 it",
                        key_file, mode)
        box = cls(read_key_file(key_file), key_file)
        box._stamp = key_file.stat().st_mtime_ns
        return box


def read_key_file(path: Path) -> list[bytes]:
    keys = [_decode(line.strip(), str(path)) for line in path.read_text().splitlines() if line.strip()]
    if not keys:
        raise SecretKeyError(f"{path}: holds no key")
    return keys


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replaces the key file at once (mode 0600): a reader sees the old file or the new one."""
    write_private_file(path, "".join(base64.b64encode(k).decode() + "\n" for k in keys))


def write_private_file(path: Path, text: str) -> None:
    """Replaces `path` with `text` at once, readable by its owner only (mode 0600, from
    the first byte): a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_key() -> bytes:
    return AESGCM.generate_key(256)


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise SecretKeyError(f"{where}: not base64") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where}: must decode to 32 bytes, got {len(key)}")
    return key
