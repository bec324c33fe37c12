"""The pluggy hook specification: the one door every driver enters through.

A distribution exposes a module under the `mailgate.drivers` entry-point group;
that module implements `mailgate_register_drivers`:

    from mailgate.drivers.spec import hookimpl

    @hookimpl
    def mailgate_register_drivers(register):
        register(MyDriver())
"""
from __future__ import annotations

from typing import Callable

import pluggy

from .api import Driver

PROJECT = "mailgate"
ENTRY_POINT_GROUP = "mailgate.drivers"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mailgate_register_drivers(register: Callable[[Driver], None]) -> None:
    """Register driver instances by calling `register(driver)` once per driver."""
