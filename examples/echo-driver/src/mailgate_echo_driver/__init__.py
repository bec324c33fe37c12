"""An example driver: providers of type `echo` talk to no server. Its "login" is
an API key checked locally, and it receives mail dropped as files into a spool
directory: enough to show every part of the contract (a settings schema with a
secret, a check report, an inbound source) and to pass the conformance suite."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from mailgate.drivers.api import (Capabilities, CheckResult, Driver, DriverContext, ErrorCode, InboundSink,
                                  InboundSource, Kind, Outcome, ProviderConfig, Report, SettingField)
from mailgate.drivers.spec import hookimpl

log = logging.getLogger("mailgate_echo_driver")

ACCEPTED_KEY = "let-me-in"
MAILBOX = "spool"  # the one mailbox of a spool directory
EPOCH = 0  # file names have no generations


class EchoDriver(Driver):
    type = "echo"
    display_name = "Echo (example plugin)"
    description = "Sends nothing anywhere; checks its API key locally; receives mail from a spool directory."
    capabilities = Capabilities(send=True, receive=True)
    settings_schema = (
        SettingField("greeting", "Greeting", required=True, description="Any text."),
        SettingField("api_key", "API key", secret=True, required=True),
        SettingField("retries", "Retries", Kind.INTEGER, minimum=0, maximum=5, default=1),
        SettingField("spool_dir", "Spool directory", required_when={"receive_emails": True},
                     description="Where incoming mail is dropped: one message per *.eml file, written "
                                 "under another name and renamed (so it is never read half written). "
                                 "A file is removed once its message is queued."),
    )

    async def validate(self, config: ProviderConfig, ctx: DriverContext) -> Report:
        started = time.monotonic()
        ok = config.secrets.get("api_key") == ACCEPTED_KEY
        checks = [CheckResult(
            "echo.auth", "echo", "localhost", 0, Outcome.PASSED if ok else Outcome.FAILED,
            ErrorCode.NONE if ok else ErrorCode.AUTH_FAILED,
            "key accepted" if ok else "key refused", time.monotonic() - started)]
        if config.receive_emails:
            spool = Path(config.settings["spool_dir"])
            problem = spool_problem(spool)
            checks.append(CheckResult(
                "spool.open", "spool", str(spool), 0, Outcome.FAILED if problem else Outcome.PASSED,
                ErrorCode.CONNECT_FAILED if problem else ErrorCode.NONE, problem or "readable"))
        return Report(tuple(checks))

    def inbound(self, config: ProviderConfig, ctx: DriverContext, sink: InboundSink) -> InboundSource | None:
        return SpoolSource(Path(config.settings["spool_dir"]), sink, ctx)


def spool_problem(spool: Path) -> str | None:
    if not spool.is_dir():
        return "no such directory"
    if not os.access(spool, os.R_OK | os.W_OK | os.X_OK):
        return "not readable and writable"
    return None


class SpoolSource(InboundSource):
    """Looks at the directory every `ctx.poll_interval` seconds. A file's message is
    handed to the sink, and only once the sink has committed it is the file removed
    (commit before acknowledge): a crash in between leaves the file, which the next
    look recognises as committed (its number is not above the position) and removes."""

    def __init__(self, spool: Path, sink: InboundSink, ctx: DriverContext) -> None:
        self.spool, self.sink, self.ctx = spool, sink, ctx
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        reported: CheckResult | None | bool = False  # nothing said yet
        while True:
            problem = reported
            try:
                await self.ctx.run_blocking(self._look)
                problem = None
            except OSError as e:  # the directory: gone, or not ours to read
                problem = CheckResult("spool.open", "spool", str(self.spool), 0, Outcome.FAILED,
                                      ErrorCode.CONNECT_FAILED, e.strerror or type(e).__name__)
            except Exception:  # the sink did not commit: the files stay, handed again next time
                log.warning("spool %s: mail not taken this time", self.spool, exc_info=True)
            if problem != reported:
                self.sink.status(MAILBOX, problem)
                reported = problem
            await asyncio.sleep(self.ctx.poll_interval)

    def _look(self) -> None:
        """One look at the spool (blocking: in the server's worker pool)."""
        names = sorted(name for name in os.listdir(self.spool) if name.endswith(".eml"))
        if not names:
            return
        numbers = self.sink.numbers(MAILBOX, names)
        at = self.sink.position(MAILBOX)
        last = at.last if at.epoch == EPOCH else 0
        new = sorted((numbers[name], name) for name in names if numbers[name] > last)
        if new:
            self.sink.deliver(MAILBOX, EPOCH, [(number, (self.spool / name).read_bytes()) for number, name in new])
        for name in names:  # all committed now
            (self.spool / name).unlink(missing_ok=True)


@hookimpl
def mailgate_register_drivers(register):
    register(EchoDriver())
