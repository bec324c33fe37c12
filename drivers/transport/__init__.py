"""Mail transport: the one place where connections to SMTP, IMAP and POP3 servers
are opened, secured (verified TLS), authenticated, classified when they fail, and
throttled after failed logins; pooled SMTP sending (SmtpPool); and watching mailboxes
for new mail (WatchHub: IMAP IDLE multiplexed on one thread). Blocking; run it in a
worker pool.
"""
from .auth import Authenticator, PasswordAuth
from .endpoint import Endpoint
from .errors import AuthUnavailable, TransportError, classify
from .imap import connect_imap
from .pool import SendError, SendResult, SmtpPool
from .pop3 import connect_pop3
from .probe import probe
from .smtp import connect_smtp
from .throttle import LoginThrottle, default_throttle
from .tls import client_context
from .watch import MailboxSink, MailboxSpec, WatchHub

__all__ = [
    "Authenticator", "AuthUnavailable", "Endpoint", "LoginThrottle", "MailboxSink", "MailboxSpec",
    "PasswordAuth", "SendError", "SendResult", "SmtpPool", "TransportError", "WatchHub", "classify",
    "client_context", "connect_imap", "connect_pop3", "connect_smtp", "default_throttle", "probe",
]
