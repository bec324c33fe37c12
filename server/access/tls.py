"""Server TLS, and callers known by their client certificate (mutual TLS).

The certificate and key files are read again whenever they change: grpcio asks
for the configuration at each new connection (dynamic server credentials), so a
renewed certificate serves new connections at once while open ones, streams
included, carry on undisturbed.

A client certificate is mapped to a principal in the clients file (TOML), by a
name the certificate carries: its subject's common name, or a DNS, URI or email
subjectAltName:

    [clients."dialer-sales"]
    permissions = ["inbound.consume"]
    campaigns = ["sales"]
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..config import ConfigError, Settings, read_toml
from .permissions import PERMISSIONS
from .tokens import MAX_NAME, MAX_SCOPE_ITEMS, Principal

log = logging.getLogger("mailgate.access")


@dataclass
class _Files:
    cert: str
    key: str
    client_ca: str

    def stamp(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in (self.cert, self.key, self.client_ca) if p)

    def configuration(self) -> Any:
        read = lambda path: Path(path).read_bytes()  # noqa: E731
        return grpc.ssl_server_certificate_configuration(
            [(read(self.key), read(self.cert))], root_certificates=read(self.client_ca) if self.client_ca else None)


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """TLS from MAILGATE_TLS_CERT / _KEY, re-read when the files change; with
    MAILGATE_TLS_CLIENT_CA, every client must present a certificate it signed."""
    files = _Files(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        stamp, initial = files.stamp(), files.configuration()
    except OSError as e:
        raise ConfigError(f"MAILGATE_TLS_*: cannot read {e.filename}: {e.strerror}") from None
    seen = [stamp]

    def fetch() -> Any:
        try:
            now = files.stamp()
            if now == seen[0]:
                return None  # unchanged: grpcio keeps what it has
            configuration = files.configuration()
        except OSError as e:  # half-way through a renewal: keep serving the old certificate
            log.warning("TLS files not readable (%s); still serving the previous certificate", e.strerror)
            return None
        seen[0] = now
        log.info("TLS certificate reloaded from %s", settings.tls_cert)
        return configuration

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=bool(files.client_ca))


class Clients:
    """Principals of the callers known by client certificate."""

    def __init__(self, by_name: dict[str, Principal]):
        self._by_name = by_name

    @classmethod
    def load(cls, path: str) -> Clients:
        if not path:
            return cls({})
        data = read_toml(path, "MAILGATE_CLIENTS_FILE")
        by_name = {}
        for name, entry in (data.get("clients") or {}).items():
            where = f"MAILGATE_CLIENTS_FILE: {path}: [clients.{name!r}]"
            if not isinstance(entry, dict) or not name or len(name) > MAX_NAME:
                raise ConfigError(f"{where}: expected a table under a name of 1 to {MAX_NAME} characters")
            permissions, campaigns, providers = (entry.get(k, []) for k in ("permissions", "campaigns", "providers"))
            for key, value in (("permissions", permissions), ("campaigns", campaigns), ("providers", providers)):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
                        or len(value) > MAX_SCOPE_ITEMS:
                    raise ConfigError(f"{where}: {key} must be a list of at most {MAX_SCOPE_ITEMS} strings")
            unknown = [p for p in permissions if p not in PERMISSIONS]
            if unknown or not permissions:
                raise ConfigError(f"{where}: give permissions from {', '.join(PERMISSIONS)}"
                                  + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
            ids = [p.removeprefix("providers/") for p in providers]
            by_name[name] = Principal(f"clients/{name}", name, frozenset(permissions), frozenset(campaigns),
                                      frozenset(ids))
        return cls(by_name)

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def identify(self, auth_context: dict[str, list[bytes]]) -> Principal | None:
        """The principal of the verified peer certificate, if the file names one of its names."""
        for key in ("x509_common_name", "x509_subject_alternative_name"):
            for value in auth_context.get(key, ()):
                principal = self._by_name.get(value.decode(errors="replace"))
                if principal is not None:
                    return principal
        return None
