"""How a wattlens process runs CPython's garbage collector.

A report or a page load over 1,000 GPUs builds some 100 k objects (rows, buckets, per-GPU
dicts) that live until it ends. With CPython's default thresholds (700 allocations) each few
thousand of them trigger a collection, and the full ones walk every object the process holds,
Dash and plotly included: 0.2-0.3 s of a 1.9 s report (docs/benchmarks.md). wattlens creates
few reference cycles, so it collects less often, and leaves what it imported at start out of
the walk (:func:`settle`).
"""

from __future__ import annotations

import gc
from functools import cache

GEN0_THRESHOLD = 10_000  # allocations between young collections; CPython's default is 700


def tune_gc() -> None:
    """Collect the youngest generation every 10 k allocations instead of 700 (the older two
    keep their defaults). Called once, at the start of every command."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


@cache
def settle() -> None:
    """Move every object alive now (modules, the app, the store) out of the collector's walks:
    call once the command has imported what it runs, before its work. Once a process: what a
    later call would freeze is the work's, which may become garbage."""
    gc.freeze()
