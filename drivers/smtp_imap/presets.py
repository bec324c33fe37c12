"""Well-known servers, filled in when an account at these domains gives none."""
from __future__ import annotations

from dataclasses import dataclass

from ..transport.endpoint import Endpoint


@dataclass(frozen=True)
class Preset:
    name: str
    smtp: Endpoint
    imap: Endpoint
    pop3: Endpoint


GMAIL = Preset("Gmail", Endpoint("smtp.gmail.com", 587, "STARTTLS"),
               Endpoint("imap.gmail.com", 993, "TLS"), Endpoint("pop.gmail.com", 995, "TLS"))
OUTLOOK = Preset("Outlook", Endpoint("smtp-mail.outlook.com", 587, "STARTTLS"),
                 Endpoint("outlook.office365.com", 993, "TLS"),
                 Endpoint("outlook.office365.com", 995, "TLS"))

_BY_DOMAIN = {
    "gmail.com": GMAIL, "googlemail.com": GMAIL,
    "outlook.com": OUTLOOK, "hotmail.com": OUTLOOK, "live.com": OUTLOOK, "msn.com": OUTLOOK,
    "office365.com": OUTLOOK,
}


def for_account(account: str) -> Preset | None:
    domain = account.rpartition("@")[2].lower()
    if domain.endswith(".onmicrosoft.com"):  # Microsoft 365 tenants' own domain
        return OUTLOOK
    return _BY_DOMAIN.get(domain)


# Default port per protocol and security when none is given.
DEFAULT_PORTS = {
    "smtp": {"STARTTLS": 587, "TLS": 465, "NONE": 25},
    "imap": {"STARTTLS": 143, "TLS": 993, "NONE": 143},
    "pop3": {"STARTTLS": 110, "TLS": 995, "NONE": 110},
}
DEFAULT_SECURITY = {"smtp": "STARTTLS", "imap": "TLS", "pop3": "TLS"}
