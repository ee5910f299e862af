"""The dashboard's pages: each module builds its layout (no data) and registers thin callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from analytics.context import Context, Settings
from analytics.filters import Filter
from collector.store.base import Store
from dashboard.actuation import AgentClient
from dashboard.views import DEFAULT_RANGE, ContextMemo


@dataclass
class Deps:
    """What every page's callbacks read: the (cached) store, settings, and optional actuation."""

    store: Store
    settings: Settings = field(default_factory=Settings)
    refresh_s: float = 10.0
    actuation: AgentClient | None = None
    memo: ContextMemo = field(init=False)

    def __post_init__(self) -> None:
        self.memo = ContextMemo(self.settings)

    def context(self, range_key: str | None, view: dict[str, object] | None = None) -> Context:
        """The analytics Context of the range, narrowed to the view's filters (analytics.filters:
        the same filter as ``wattlens report --node/--model/--job``)."""
        from analytics.filters import filter_context

        return filter_context(self.memo.get(self.store, range_key or DEFAULT_RANGE), view_filter(view))


def view_filter(view: dict[str, object] | None) -> Filter:
    """The analytics filter of the URL state kept in the ``view`` store."""
    v = view or {}
    return Filter(str(v.get("node") or ""), str(v.get("model") or ""), str(v.get("job") or ""),
                  str(v.get("team") or ""))


def anchor(name: str) -> object:
    """A hidden marker in a page's layout (id ``page-NAME``); its callbacks take its ``title`` as an
    Input, so they run only while that page is shown, and tests wait for it in the DOM."""
    from dash import html

    return html.Div(id=f"page-{name}", title=name, hidden=True)
