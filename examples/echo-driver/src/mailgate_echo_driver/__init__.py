"""An example driver: providers of type `echo` talk to no server. Its "login" is
an API key checked locally, which is enough to show every part of the contract:
a settings schema with a secret, a check report, and the conformance suite."""
from __future__ import annotations

import time

from mailgate.drivers.api import (Capabilities, CheckResult, Driver, DriverContext, ErrorCode,
                                  Kind, Outcome, ProviderConfig, Report, SettingField)
from mailgate.drivers.spec import hookimpl

ACCEPTED_KEY = "let-me-in"


class EchoDriver(Driver):
    type = "echo"
    display_name = "Echo (example plugin)"
    description = "Sends nothing anywhere; checks its API key locally."
    capabilities = Capabilities(send=True)
    settings_schema = (
        SettingField("greeting", "Greeting", required=True, description="Any text."),
        SettingField("api_key", "API key", secret=True, required=True),
        SettingField("retries", "Retries", Kind.INTEGER, minimum=0, maximum=5, default=1),
    )

    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        started = time.monotonic()
        ok = config.secrets.get("api_key") == ACCEPTED_KEY
        return Report((CheckResult(
            "echo.auth", "echo", "localhost", 0, Outcome.PASSED if ok else Outcome.FAILED,
            ErrorCode.NONE if ok else ErrorCode.AUTH_FAILED,
            "key accepted" if ok else "key refused", time.monotonic() - started),))


@hookimpl
def mailgate_register_drivers(register):
    register(EchoDriver())
