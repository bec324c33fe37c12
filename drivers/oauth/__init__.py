"""The built-in OAuth2 drivers, `outlook` and `gmail`, registered through the
`mailgate.drivers` entry point like any third-party driver."""
from ..spec import hookimpl
from .gmail import GmailDriver
from .outlook import OutlookDriver


@hookimpl
def mailgate_register_drivers(register):
    register(OutlookDriver())
    register(GmailDriver())
