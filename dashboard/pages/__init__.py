"""The dashboard's pages: each module builds its layout (no data) and registers thin callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from analytics.context import Settings
from collector.store.base import Store
from dashboard.actuation import AgentClient
from dashboard.views import ContextMemo


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


def anchor(name: str) -> object:
    """A hidden marker in a page's layout (id ``page-NAME``); its callbacks take its ``title`` as an
    Input, so they run only while that page is shown, and tests wait for it in the DOM."""
    from dash import html

    return html.Div(id=f"page-{name}", title=name, hidden=True)
