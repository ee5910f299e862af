"""wattlens: how much useful AI work each joule buys, and what to change. The CLI and the public Python API."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public API, imported lazily so `import wattlens` stays cheap on every node.
_LAZY = {
    "job": "wattlens.jobs",
    "Job": "wattlens.jobs",
}

__all__ = ["Job", "__version__", "job"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wattlens' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
