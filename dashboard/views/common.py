"""Shared by every page's view model: time ranges and windows, the KPI card record, the analytics Context memo."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from analytics import queries
from analytics.context import Context, Settings, load_context
from analytics.timeutil import NS, Window
from collector.store.base import Store

HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
RANGES: dict[str, tuple[str, int]] = {
    "1h": ("Last hour", 3600),
    "6h": ("Last 6 hours", 6 * 3600),
    "24h": ("Last 24 hours", 86400),
    "7d": ("Last 7 days", 7 * 86400),
}
DEFAULT_RANGE = "24h"
MAX_BUCKETS = 600  # ~one bucket per 2 px of a 1,200 px chart: the point budget of a time series
TOP_SERIES = 10  # stacked groups shown by name; the rest are summed as "other"
NOW_LOOKBACK_S = 300  # "power now" = mean power over the last five minutes
STALE_AFTER_S = 300  # newer data than this is "live"
KPI_ALIGN_S = 300  # 24 h cards and range means end at a whole five minutes




def custom_range(range_key: str | None) -> tuple[int, int] | None:
    """(start ns, end ns) of an absolute range 'START..END' (ISO times, UTC unless they say
    otherwise); None for a preset key. A malformed range is an error naming it."""
    if not range_key or ".." not in range_key:
        return None
    from datetime import UTC, datetime

    a, _, b = range_key.partition("..")
    try:
        start, end = (datetime.fromisoformat(t.strip().replace("Z", "+00:00")) for t in (a, b))
    except ValueError:
        raise ValueError(f"range: expected START..END in ISO time (2026-11-29T10:00..2026-11-29T12:00), "
                         f"got {range_key!r}") from None
    s_ns, e_ns = (int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * NS) for t in (start, end))
    if e_ns <= s_ns:
        raise ValueError(f"range: END must be after START, got {range_key!r}")
    return s_ns, e_ns


def range_key_for(start_ns: int, end_ns: int) -> str:
    """The 'START..END' key of an absolute range, to the second, in UTC."""
    from datetime import UTC, datetime

    def fmt(t: int) -> str:
        return datetime.fromtimestamp(t // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{fmt(start_ns)}..{fmt(end_ns)}"


def range_label(range_key: str | None) -> str:
    """'Last 6 hours', or '2026-11-29 10:00 – 12:00 UTC' for an absolute range."""
    fixed = custom_range(range_key)
    if fixed is not None:
        return window_text(Window(*fixed))
    return RANGES[range_key or DEFAULT_RANGE][0]


def range_seconds(range_key: str | None) -> int:
    """Seconds of a time-range key; an unknown key is an error naming it."""
    fixed = custom_range(range_key)
    if fixed is not None:
        return max(1, (fixed[1] - fixed[0]) // NS)
    key = range_key or DEFAULT_RANGE
    if key not in RANGES:
        raise ValueError(f"range: expected one of {', '.join(RANGES)} or START..END, got {range_key!r}")
    return RANGES[key][1]


def data_end_ns(store: Store) -> int | None:
    """Just after the newest GPU or job point: windows end here, so a stopped store still shows data."""
    newest = queries.newest_time_ns(store, ("gpu", "job"))
    return None if newest is None else newest + 1


def window_for(store: Store, range_key: str | None, end_ns: int | None = None,
               align_s: int | None = None) -> Window:
    """The window of a time-range key, ending at ``end_ns`` or the newest point (or now, if empty).

    ``align_s`` ends it at a whole multiple of that many seconds (the last partial minute left
    out): every bucket of such a window but the newest is a settled rollup in the cache.
    """
    fixed = custom_range(range_key)
    if fixed is not None:  # an absolute range is what it says, whatever the data
        return Window(*fixed)
    end = end_ns if end_ns is not None else data_end_ns(store)
    if end is not None and align_s:
        end = end // (align_s * NS) * align_s * NS
    return Window.last(range_seconds(range_key), end_ns=end)


def settled_end_ns(store: Store, end_ns: int) -> int:
    """``end_ns``, moved back to the cache's settle horizon when reading through a CachedStore,
    and down to a whole five minutes (KPI_ALIGN_S).

    The 24 h cards, the heatmap and the banners use windows ending here: every bucket they read
    is then a settled rollup, so between five-minute steps they cost no store query at all (on
    InfluxDB a query grouped by 1,000 GPUs costs ~0.2 s even over two minutes). The power chart
    alone follows the newest data.
    """
    settled = getattr(store, "settled_ns", None)
    if callable(settled):
        end_ns = min(end_ns, int(settled()))
    return end_ns // (KPI_ALIGN_S * NS) * KPI_ALIGN_S * NS


def window_text(window: Window) -> str:
    """'2026-11-29 17:05 – 18:05 UTC': the window a page's figures cover, for its caption."""
    from dashboard.figures import iso

    a, b = iso(window.start_ns)[:16], iso(window.end_ns)[:16]
    return f"{a} – {b[11:] if a[:10] == b[:10] else b} UTC"


def range_window(store: Store, range_key: str | None, end_ns: int | None = None) -> Window:
    """The time range ending at :func:`settled_end_ns`: for means and totals over the range."""
    fixed = custom_range(range_key)
    if fixed is not None:
        return Window(*fixed)
    end = end_ns if end_ns is not None else data_end_ns(store)
    if end is None:
        return window_for(store, range_key, None)
    return Window.last(range_seconds(range_key), end_ns=settled_end_ns(store, end))


@dataclass(frozen=True)
class Kpi:
    """One KPI card: value with unit, a sub-line, and the change against the comparison period."""

    key: str
    label: str
    value: str
    note: str
    change_pct: float | None
    good_when: str | None  # "down", "up" or None (neither is better)
    compare: str
    raw: float | None = None


class ContextMemo:
    """The analytics Context per range, shared by the analysis pages and by η moves.

    One Context per range and minute of data. When the data has moved on by less than
    ``stale_s``, the last Context is served at once while the new one loads on a background
    thread (at 1,000 GPUs a 24 h Context takes seconds to read): pages stay responsive and
    are at most a refresh behind.
    """

    def __init__(self, settings: Settings, stale_s: float = 600.0) -> None:
        self.settings = settings
        self.stale_ns = int(stale_s * NS)
        self._items: dict[str, tuple[int, Context]] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def _window(self, store: Store, range_key: str) -> Window:
        # The same window as the Fleet cards (to the last settled five minutes): every page
        # shows one range the same way, and a context is read once per five minutes.
        return range_window(store, range_key)

    def get(self, store: Store, range_key: str) -> Context:
        window = self._window(store, range_key)
        with self._lock:
            got = self._items.get(range_key)
            if got is not None and got[0] == window.end_ns:
                return got[1]
            stale = got is not None and 0 < window.end_ns - got[0] <= self.stale_ns
            start_reload = stale and range_key not in self._loading
            if start_reload:
                self._loading.add(range_key)
        if got is not None and stale:
            if start_reload:
                threading.Thread(target=self._reload, args=(store, range_key, window),
                                 name="wattlens-context", daemon=True).start()
            return got[1]
        ctx = load_context(store, window, self.settings)
        with self._lock:
            self._items[range_key] = (window.end_ns, ctx)
        return ctx

    def _reload(self, store: Store, range_key: str, window: Window) -> None:
        try:
            ctx = load_context(store, window, self.settings)
            with self._lock:
                self._items[range_key] = (window.end_ns, ctx)
        except Exception as exc:  # the next request loads in the foreground and shows the error
            import logging

            logging.getLogger("wattlens.dashboard").warning("dashboard: reloading analytics "
                                                            "for %s failed: %s", range_key, exc)
        finally:
            with self._lock:
                self._loading.discard(range_key)
