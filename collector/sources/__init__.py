"""Source registry: name -> "module:factory". Adding a source is its own file plus one line here.

Factories take keyword options (from flags, environment or the config file)
and return a :class:`collector.sources.base.Source`. Modules are imported only
when their source is asked for, so an agent never loads what it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

from collector.errors import ConfigError
from collector.sources.base import Source

REGISTRY: dict[str, str] = {
    "sim": "collector.sources.simulated:from_options",
    "nvml": "collector.sources.nvml:from_options",
    "rapl": "collector.sources.rapl:from_options",
    "hwmon": "collector.sources.hwmon:from_options",
    "cpu-estimate": "collector.sources.cpu_estimate:from_options",
    "promscrape": "collector.sources.promscrape:from_options",
}

# What `--source auto` probes, in order: real sensors only, never the simulation
# (collector.sources.autodetect; cpu-estimate only when no CPU sensor answers).
AUTO_ORDER: tuple[str, ...] = ("nvml", "rapl", "hwmon", "cpu-estimate")


def create(name: str, **options: Any) -> Source:
    """Build the source registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted([*REGISTRY, "auto"]))
        raise ConfigError(f"--source: unknown source {name!r}; choose one of {known}") from None
    module_name, _, factory_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    source: Source = factory(**options)
    return source
