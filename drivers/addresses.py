"""What counts as a mailbox address, for every driver and the server alike."""
from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


def address_problem(value: str) -> str | None:
    """Why `value` is not a usable mailbox address, or None. Domains need not be
    public (mail.corp, example.test); other special-use names (.local, .invalid)
    are refused, as email-validator does."""
    try:
        validate_email(value, check_deliverability=False, globally_deliverable=False,
                       test_environment=True)
    except EmailNotValidError as e:
        return str(e)
    return None


def is_address(value: str) -> bool:
    return bool(value) and address_problem(value) is None
