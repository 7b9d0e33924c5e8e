"""`pushstr_registrations{dialect, platform}`: the registrations each live registry holds, read at scrape time.

The index keeps these counts on every write (`RegistryIndex.counts_by_source`), so a scrape costs a few dict
items however many registrations there are; keeping a Prometheus gauge beside them would be a second copy that
could drift. Registries are held weakly: one process has one, tests build several.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector


class Counted(Protocol):
    def counts_by_source(self) -> dict[tuple[str, str], int]: ...


NAME = "pushstr_registrations"
HELP = "Registrations held, by the dialect that made them and their platform (memory-only ones included)"


class RegistrationsCollector(Collector):
    def __init__(self) -> None:
        self._registries: weakref.WeakSet[Counted] = weakref.WeakSet()

    def track(self, registry: Counted) -> None:
        self._registries.add(registry)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, HELP, labels=["dialect", "platform"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[tuple[str, str], int] = {}
        for registry in list(self._registries):
            for source, count in registry.counts_by_source().items():
                totals[source] = totals.get(source, 0) + count
        family = GaugeMetricFamily(NAME, HELP, labels=["dialect", "platform"])
        for (dialect, platform), count in sorted(totals.items()):
            family.add_metric([dialect, platform], count)
        yield family


REGISTRATIONS = RegistrationsCollector()
REGISTRY.register(REGISTRATIONS)
