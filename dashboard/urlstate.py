"""A view as a link: the time range, the filters and the trade-off weight η in the URL query.

``?range=6h&node=node-01&model=H100&job=llm-7&team=ml&eta=0.3``; ``range`` is a preset key
(1h, 6h, 24h, 7d) or ``START..END`` in ISO time. Parsing is strict: a bad value is one line
naming the parameter and the value, and the page shows it instead of silently ignoring it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlencode

from dashboard.views.common import DEFAULT_RANGE, RANGES, custom_range, range_key_for

FILTER_KEYS = ("node", "model", "job", "team")
DEFAULT_ETA = 0.5


@dataclass(frozen=True)
class ViewState:
    """What a link carries. Empty filter strings mean "all"."""

    range: str = DEFAULT_RANGE
    node: str = ""
    model: str = ""
    job: str = ""
    team: str = ""
    eta: float = DEFAULT_ETA

    def filters(self) -> dict[str, str]:
        """The filters that are set: {"node": "node-01", ...}."""
        return {k: getattr(self, k) for k in FILTER_KEYS if getattr(self, k)}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse(search: str | None) -> ViewState:
    """The state in a URL query ('?range=6h&node=…'); unknown parameters are ignored, a bad
    value of a known one is a ValueError naming it."""
    q = parse_qs((search or "").lstrip("?"), keep_blank_values=True)
    got = {k: v[-1].strip() for k, v in q.items() if v}
    rng = got.get("range") or DEFAULT_RANGE
    if rng not in RANGES and custom_range(rng) is None:  # a malformed START..END raises there
        raise ValueError(f"range: expected one of {', '.join(RANGES)} or START..END, got {rng!r}")
    eta = DEFAULT_ETA
    if got.get("eta"):
        try:
            eta = float(got["eta"])
        except ValueError:
            raise ValueError(f"eta: expected a number in [0, 1], got {got['eta']!r}") from None
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta: expected a number in [0, 1], got {got['eta']!r}")
    return ViewState(range=rng, eta=eta, **{k: got.get(k, "") for k in FILTER_KEYS})


def to_search(state: ViewState) -> str:
    """The URL query of a state, '?range=6h&eta=0.5&node=node-01' (empty filters left out)."""
    items: list[tuple[str, str]] = [("range", state.range)]
    items += [(k, v) for k, v in state.filters().items()]
    items.append(("eta", f"{state.eta:g}"))
    return "?" + urlencode(items, safe=":.")


def from_dict(data: dict[str, object] | None) -> ViewState:
    """A state back from a dcc.Store (JSON); missing keys take their defaults."""
    if not data:
        return ViewState()
    eta = data.get("eta")
    return ViewState(range=str(data.get("range") or DEFAULT_RANGE),
                     eta=float(eta) if isinstance(eta, int | float) else DEFAULT_ETA,
                     **{k: str(data.get(k) or "") for k in FILTER_KEYS})


def range_from_fields(start: str | None, end: str | None) -> str:
    """The ``START..END`` range key (to the second, UTC) of the filter bar's "from" and "to" fields
    (ISO times such as 2026-11-29 10:00, UTC unless they say otherwise); a bad field is a ValueError
    naming it and its value."""
    from analytics.timeutil import parse_time_ns

    ns = [parse_time_ns(text or "", name) for name, text in (("from", start), ("to", end))]
    if ns[1] <= ns[0]:
        raise ValueError(f"to: must be after from, got {start!r} .. {end!r}")
    return range_key_for(ns[0], ns[1])


def range_fields(range_key: str | None) -> tuple[str, str]:
    """The "from" and "to" fields showing an absolute range ('2026-11-29 10:00:00'); empty for a
    preset (the fields' placeholders show the format)."""
    fixed = custom_range(range_key)
    if fixed is None:
        return "", ""
    a, _, b = range_key_for(*fixed).partition("..")
    return a.replace("T", " ").rstrip("Z"), b.replace("T", " ").rstrip("Z")
