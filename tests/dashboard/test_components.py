"""Layout builders without a browser: KPI tones, navigation, routing, recommendation cards in both modes."""

from __future__ import annotations

import json
from typing import Any

from analytics.recommend import Recommendation
from dashboard import components
from dashboard.app import page_for
from dashboard.pages import Deps
from dashboard.pages.recommendations import rec_card
from dashboard.views import Kpi, Status


def _json(tree: Any) -> str:
    return json.dumps(tree.to_plotly_json() if hasattr(tree, "to_plotly_json") else tree,
                      default=lambda o: o.to_plotly_json(), ensure_ascii=False)


def _delta_class(card: Any) -> str:
    return next(c.className for c in card.children if "wl-delta" in str(getattr(c, "className", "")))


def test_kpi_change_is_green_when_it_goes_the_good_way_and_neutral_when_small() -> None:
    cards = components.kpi_cards([
        Kpi("energy", "Energy", "1 kWh", "", -5.0, "down", "vs prior 24 h"),
        Kpi("per", "PER", "2 tokens/J", "", -5.0, "up", "vs prior 24 h"),
        Kpi("cost", "Cost", "$1", "", 0.4, "down", "vs prior 24 h"),
        Kpi("power", "Power", "1 kW", "", 12.0, None, "vs yesterday"),
        Kpi("pue", "PUE", "–", "", None, "down", "vs prior 24 h"),
    ])
    assert [_delta_class(c) for c in cards] == [
        "wl-delta wl-delta-good", "wl-delta wl-delta-bad", "wl-delta wl-delta-none",
        "wl-delta wl-delta-none", "wl-delta wl-delta-none"]
    texts = [_json(c) for c in cards]
    assert "▼ −5.0 % vs prior 24 h" in texts[0] and "▲ +12.0 % vs yesterday" in texts[3]
    assert "– vs prior 24 h" in texts[4]


def test_nav_marks_the_current_page_and_counts_firing_alerts() -> None:
    links = components.nav_links("/jobs/some-job", firing=3)
    active = [link for link in links if "wl-nav-active" in link.className]
    assert len(active) == 1 and active[0].href == "/jobs"
    alerts = next(link for link in links if link.href == "/alerts")
    assert "wl-badge" in _json(alerts) and '"3"' in _json(alerts)
    assert "wl-badge" not in _json(components.nav_links("/", firing=0))


def test_banners_say_simulated_and_estimated_plainly() -> None:
    both = components.banners(Status(True, True, 1, 1.0, 0))
    assert [getattr(b, "id", None) for b in both] == ["banner-sim", "banner-est"]
    assert components.banners(Status(False, False, 1, 1.0, 0)) == []
    fresh = _json(components.freshness(Status(False, False, 1_800_000_000 * 10**9, 30.0, 0)))
    stale = _json(components.freshness(Status(False, False, 1_800_000_000 * 10**9, 7300.0, 0)))
    assert "live · data to 08:00:00 UTC" in fresh and "stale · newest point 2 h 01 min ago" in stale


def test_routes_and_an_honest_not_found(tmp_path: Any) -> None:
    from collector.store.sqlite import SQLiteStore

    deps = Deps(SQLiteStore(tmp_path / "x.db"))
    for path, anchor in (("/", "page-fleet"), ("/jobs", "page-jobs"), ("/jobs/a%2Fb", "page-job"),
                         ("/tradeoff", "page-tradeoff"), ("/carbon", "page-carbon"),
                         ("/recommendations", "page-recs"), ("/alerts/", "page-alerts")):
        assert f'"id": "{anchor}"' in _json(page_for(path, deps, 0.5)), path
    assert '"data": "a/b"' in _json(page_for("/jobs/a%2Fb", deps, 0.5))  # the job id, decoded
    missing = _json(page_for("/nope", deps, 0.5))
    assert "Page not found" in missing and "/nope" in missing


def _rec(action: dict[str, Any] | None) -> Recommendation:
    return Recommendation(
        id="power_cap:x", kind="power_cap", target="llm on H100", title="Cap llm at 400 W",
        detail="because", evidence={"frontier": [{"cap_w": 400}], "lambda": 1.0},
        savings_kwh_per_day=12.3, savings_kg_co2_per_day=4.5, savings_cost_per_day=1.8,
        estimate_method="measured", action=action)


def test_recommendation_card_offers_apply_only_with_actuation_else_the_cli_command() -> None:
    action = {"type": "power_cap", "watts": 400.0, "gpus": {"node-00": ["0", "1"]}}
    on = _json(rec_card(1, _rec(action), enabled=True))
    off = _json(rec_card(1, _rec(action), enabled=False))
    assert '"type": "apply-rec"' in on and "Apply…" in on
    assert "apply-rec" not in off
    assert ("for g in 0 1; do wattlens cap apply --host node-00 --gpu $g --watts 400 --apply; done"
            in off)
    for text in (on, off):
        assert "12.3 kWh/day" in text and "4.5 kg CO₂/day" in text and "$1.80/day" in text
        assert "Evidence and how it was estimated" in text
    plain = _json(rec_card(2, _rec({"type": "consolidate", "job": "x"}), enabled=True))
    assert "apply-rec" not in plain and "wattlens cap" not in plain


def test_quantities_have_sensible_precision_and_never_read_minus_zero() -> None:
    from analytics import units

    assert units.energy(588.55 * 3600) == "588.5 Wh"  # not 588.55 Wh
    assert units.energy(287.47 * 3.6e6) == "287.5 kWh" and units.energy(2.5 * 3.6e6) == "2.50 kWh"
    assert units.energy(1234 * 3.6e6) == "1.23 MWh"
    assert units.energy(-0.0) == "0.00 Wh" and units.power(-0.01) == "0.0 W"
    assert units.mass_co2(-0.001) == "0.0 g CO₂" and units.energy(-5 * 3.6e6) == "-5.00 kWh"


def test_the_fleet_power_chart_keeps_its_place_before_its_first_figure() -> None:
    """Before the first figure arrives the chart's box already has the figure's height: the
    heatmap below was painted over the power chart on a first load (seen in a screenshot)."""
    from dash import dcc

    from dashboard import figures
    from dashboard.pages import fleet

    def graphs(node: Any) -> list[Any]:
        found = [node] if isinstance(node, dcc.Graph) else []
        children = getattr(node, "children", None)
        for child in children if isinstance(children, list) else [children]:
            if child is not None and not isinstance(child, str):
                found.extend(graphs(child))
        return found

    power = [g for part in fleet.layout() for g in graphs(part) if g.id == "fleet-power"]
    assert len(power) == 1
    assert power[0].style == {"height": f"{figures.POWER_CHART_HEIGHT}px"}
    assert figures.power_over_time([], stacked_by="node").layout.height == figures.POWER_CHART_HEIGHT
