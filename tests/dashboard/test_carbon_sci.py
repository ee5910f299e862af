"""The Carbon page's SCI figure: same numbers as the report, drawn as operational + embodied per 1,000 units."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.context import Settings, load_context
from analytics.report import report_from
from analytics.timeutil import Window
from dashboard import figures, views
from tests.analytics.test_sci import M_G, NS, O_G, SCI, T0, worked_example_store


def test_carbon_view_sci_equals_the_report_and_the_figure_shows_it(tmp_path: Path) -> None:
    store = worked_example_store(tmp_path / "s.db")
    try:
        ctx = load_context(store, Window(T0, T0 + 4 * 3600 * NS), Settings())
    finally:
        store.close()
    v = views.carbon_view(ctx)
    assert v.sci == report_from(ctx, 0.5).sci  # one definition, two readers
    fig = figures.sci_bars(v.sci["jobs"])
    operational, emb = fig.data
    assert operational.name == "operational E·I" and emb.name == "embodied M"
    assert list(operational.y) == ["llm-train (per 1k tokens)"]
    assert operational.x[0] == pytest.approx(1000 * O_G / 1_000_000)
    assert emb.x[0] == pytest.approx(1000 * M_G / 1_000_000)
    assert operational.x[0] + emb.x[0] == pytest.approx(1000 * SCI)


def test_sci_figure_without_known_terms_is_an_empty_state() -> None:
    fig = figures.sci_bars([{"job": "j", "sci_g_per_unit": None, "r": 10.0}])
    assert not fig.data and "No job with every SCI term known" in fig.layout.annotations[0].text
