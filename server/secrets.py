"""Sealing secrets at rest: AES-256-GCM with a key from the environment or a key file.

Sealed format: b"v1" | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag.
The associated data binds a ciphertext to its owner (provider id and secret
name), so a sealed password copied onto another row does not open.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets as _random
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .logs import known_secrets

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


class SecretBox:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise SecretKeyError("the secret key must be 32 bytes (base64: 44 characters)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).digest()[:4]
        # Keys for other purposes come from this, never from the sealing key itself.
        self._root = hmac.digest(key, b"mailgate derived keys v1", "sha256")

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id.hex()})"

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key of its own for `purpose` (e.g. "page-tokens"), the same on every
        replica with this secret key; knowing it reveals neither the secret key nor
        another purpose's key."""
        return hmac.digest(self._root, purpose.encode(), "sha256")

    def seal(self, plaintext: str, context: str) -> Sealed:
        nonce = _random.token_bytes(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(_VERSION + self.key_id + nonce + ct)

    def open(self, sealed: Sealed, context: str) -> str:
        data = sealed.data
        if data[:2] != _VERSION or data[2:6] != self.key_id:
            raise SecretKeyError("secret sealed with another key: is MAILGATE_SECRET_KEY the one "
                                 "this database was created with?")
        plaintext = self._aead.decrypt(data[6:18], data[18:], context.encode()).decode()
        known_secrets.add(plaintext)
        return plaintext

    @classmethod
    def from_environment(cls, key_file: Path) -> "SecretBox":
        """MAILGATE_SECRET_KEY (base64 of 32 bytes) wins; else the key file, created
        with mode 0600 on first run so the embedded default needs no set-up."""
        env = os.environ.get(ENV_KEY)
        if env:
            return cls(_decode(env, ENV_KEY))
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
        return cls(_decode(key_file.read_text().strip(), str(key_file)))


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise SecretKeyError(f"{where}: not base64") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where}: must decode to 32 bytes, got {len(key)}")
    return key
