"""A throw-away certificate authority for the test servers.

Everything is made with the ``cryptography`` package (no openssl CLI). Keys are
EC P-256: generating one takes about a millisecond, an RSA key 50-100 ms, and every
client we test (Python ssl, OpenSSL inside Dovecot) accepts ECDSA.

The certificates follow the rules that strict verifiers apply (Python 3.13's
VERIFY_X509_STRICT, Go, Java): CA with critical basicConstraints and keyUsage,
subject/authority key identifiers, server certificate with subjectAltName for
127.0.0.1, ::1 and localhost and extendedKeyUsage serverAuth.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA", "SERVER_NAMES"]

# What the server certificate is valid for.
SERVER_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TestCA:
    """A CA (``ca_path``) and one server certificate/key signed by it."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    ca_path: Path
    ca_pem: str
    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path | str, *, name: str = "mailgate test CA") -> TestCA:
        """Make a new CA and server certificate, written as PEM files in ``directory``.

        Each call makes an unrelated CA: two calls in two directories give a pair for
        "certificate not trusted" tests (see also :meth:`other`).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        # Back-dated a day so clock skew between processes never matters.
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=365)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
               x509.IPAddress(ipaddress.ip_address("::1")),
               x509.DNSName("localhost")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

        _write_key(directory / "ca.key", ca_key)  # for client certificates (client_certificate)
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        ca_path = directory / "ca.pem"
        cert_path = directory / "server.pem"
        key_path = directory / "server.key"
        ca_path.write_text(ca_pem)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cls(directory, ca_path, ca_pem, cert_path, key_path)

    def client_certificate(self, common_name: str, *, uri: str = "") -> tuple[Path, Path]:
        """A client certificate (extendedKeyUsage clientAuth) for `common_name`, with
        `uri` as a subjectAltName when given: (certificate path, key path)."""
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_pem.encode())
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if uri:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                                            critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        stem = self.directory / f"client-{common_name}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path

    @classmethod
    def other(cls, directory: Path | str) -> TestCA:
        """An unrelated CA, for "certificate not trusted" tests."""
        return cls.create(directory, name="mailgate unrelated test CA")

    def server_context(self) -> ssl.SSLContext:
        """TLS context for a server presenting the certificate (no client certs)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS context for clients that trusts this CA only (not the system store)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 from the start rather than chmod after writing.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)  # in case the file existed with other modes
