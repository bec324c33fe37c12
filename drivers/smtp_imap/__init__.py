"""The built-in `smtp_imap` driver, registered through the `mailgate.drivers`
entry point like any third-party driver."""
from ..spec import hookimpl
from .driver import SmtpImapDriver


@hookimpl
def mailgate_register_drivers(register):
    register(SmtpImapDriver())
