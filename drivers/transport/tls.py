"""Client TLS contexts: always verified, TLS 1.2 or newer."""
from __future__ import annotations

import functools
import ssl


@functools.lru_cache(maxsize=64)
def client_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """A verifying client context (CERT_REQUIRED, hostname checked, TLS >= 1.2).

    Without `ca_pem` the system trust store is used. With it, only the given PEM
    certificates are trusted (a provider's private CA, or its self-signed server
    certificate). Contexts are cached per PEM text: building one parses the whole
    trust store, and an SSLContext is safe to share between threads.
    Raises ssl.SSLError when `ca_pem` holds no usable certificate.
    """
    if ca_pem is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        ctx.load_verify_locations(cadata=ca_pem)
        # Lets a provider pin an intermediate or the server certificate itself, not only
        # a self-signed root (Python 3.13's default contexts set this flag too).
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
