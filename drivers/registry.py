"""Finds installed drivers through the `mailgate.drivers` entry-point group.

The built-in drivers are entry points of mailgate's own distribution, so the
server names none of them: it only asks this registry.
"""
from __future__ import annotations

import logging
from typing import Iterable

import pluggy

from . import spec
from .api import Driver

log = logging.getLogger("mailgate.drivers")


class DriverRegistry:
    def __init__(self) -> None:
        self._drivers: dict[str, Driver] = {}
        self._sources: dict[str, str] = {}

    @classmethod
    def from_entry_points(cls, extra_plugins: Iterable[object] = ()) -> "DriverRegistry":
        """Loads every installed driver; `extra_plugins` are modules or objects with
        a `mailgate_register_drivers` hook implementation (used by tests)."""
        pm = pluggy.PluginManager(spec.PROJECT)
        pm.add_hookspecs(spec)
        pm.load_setuptools_entrypoints(spec.ENTRY_POINT_GROUP)
        for plugin in extra_plugins:
            if not pm.is_registered(plugin):  # installed and also passed in: once is enough
                pm.register(plugin)
        sources = {id(plugin): f"{dist.project_name} {dist.version}"
                   for plugin, dist in pm.list_plugin_distinfo()}
        registry = cls()
        for impl in pm.hook.mailgate_register_drivers.get_hookimpls():
            source = sources.get(id(impl.plugin), impl.plugin_name)
            impl.function(register=lambda d, s=source: registry.add(d, s))
        log.info("drivers: %s", ", ".join(f"{t} ({s})" for t, s in sorted(registry._sources.items())))
        return registry

    def add(self, driver: Driver, source: str = "") -> None:
        if not isinstance(driver, Driver):
            raise TypeError(f"{source}: registered {driver!r}, which is not a mailgate Driver")
        if driver.type in self._drivers:
            raise ValueError(f"driver type {driver.type!r} registered twice "
                             f"({self._sources[driver.type]} and {source})")
        self._drivers[driver.type] = driver
        self._sources[driver.type] = source

    def get(self, type_: str) -> Driver | None:
        return self._drivers.get(type_)

    def source(self, type_: str) -> str:
        return self._sources.get(type_, "")

    def types(self) -> list[str]:
        return sorted(self._drivers)

    def __iter__(self):
        return (self._drivers[t] for t in self.types())
