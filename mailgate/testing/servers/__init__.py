"""Real servers for the tests, all on 127.0.0.1 and free ports.

* :class:`TestCA` (certs): a throw-away CA and a server certificate.
* :class:`SmtpServer` (smtpd): aiosmtpd in NONE / STARTTLS / TLS mode.
* :class:`Dovecot` (dovecot): a private IMAP/POP3/LMTP instance.
* :class:`SilentListener`, :class:`ClosedPort` (silent): for timeouts and refused
  connections.

pytest fixtures built on these are in :mod:`mailgate.testing.fixtures`.
"""

from .certs import TestCA
from .dovecot import Dovecot, DovecotError, ensure_installed
from .silent import ClosedPort, SilentListener, free_ports
from .smtpd import MODES, ReceivedMessage, SmtpHandler, SmtpServer

__all__ = [
    "TestCA",
    "Dovecot", "DovecotError", "ensure_installed",
    "ClosedPort", "SilentListener", "free_ports",
    "MODES", "ReceivedMessage", "SmtpHandler", "SmtpServer",
]
