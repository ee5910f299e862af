"""Figure builders from data, without a browser: traces, units on every axis, point budgets, empty states."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from analytics import units
from analytics.queries import GpuCell, Series
from dashboard import figures
from dashboard.figures import MAX_POINTS_PER_TRACE, AlertSpan, CapPoint

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


def _axis_titles(fig: go.Figure) -> list[str]:
    layout = fig.to_plotly_json()["layout"]
    return [v["title"]["text"] for k, v in layout.items()
            if k.startswith(("xaxis", "yaxis")) and isinstance(v, dict) and v.get("title", {}).get("text")]


def _has_unit(title: str) -> bool:
    return ("(" in title and ")" in title) or " per " in title or "J " in title


def test_power_over_time_stacks_groups_in_kw_with_units_and_grey_other() -> None:
    series = [Series(f"node-{i}", [T0 + k * 300 * NS for k in range(10)], [1000.0 * (i + 1)] * 10)
              for i in range(3)]
    series.append(Series("other (7 nodes)", series[0].times_ns, [500.0] * 10))
    fig = figures.power_over_time(series, stacked_by="node")
    assert [t.name for t in fig.data] == ["node-0", "node-1", "node-2", "other (7 nodes)"]
    assert all(t.stackgroup == "power" for t in fig.data)
    assert list(fig.data[1].y) == [2.0] * 10  # W -> kW
    assert fig.data[3].line.color == figures.OTHER
    assert fig.data[0].x[0] == "2027-01-15 08:00:00"
    titles = _axis_titles(fig)
    assert "GPU power (kW)" in titles and "time (UTC)" in titles


def test_power_over_time_keeps_every_trace_within_the_point_budget() -> None:
    n = 3 * MAX_POINTS_PER_TRACE + 7
    s = Series("node-0", [T0 + k * NS for k in range(n)], [float(k % 100) for k in range(n)])
    fig = figures.power_over_time([s], stacked_by="node")
    counts = figures.trace_points(fig)
    assert counts[0] <= MAX_POINTS_PER_TRACE
    assert counts[0] >= MAX_POINTS_PER_TRACE // 2  # downsampled, not truncated to nothing
    # The mean survives downsampling (averaging neighbours keeps the energy).
    assert sum(fig.data[0].y) / len(fig.data[0].y) == pytest.approx(sum(s.values) / n / 1000, rel=0.02)


def test_figures_carry_plain_lists_so_the_browser_can_patch_them() -> None:
    s = Series("node-0", [T0 + k * 60 * NS for k in range(5)], [1.0, 2.0, None, 4.0, 5.0])  # type: ignore[list-item]
    data = json.loads(figures.power_over_time([s], stacked_by="node").to_json())["data"][0]
    assert isinstance(data["x"], list) and isinstance(data["y"], list)  # no typed-array encoding
    assert data["y"][2] is None  # a bucket with no report is a gap, not a zero


@pytest.mark.parametrize("maker", [
    lambda: figures.power_over_time([], stacked_by="node"),
    lambda: figures.gpu_heatmap([]),
    lambda: figures.job_detail([], [], [], [], unit="tokens", per_unit="tokens/J", baseline=None),
    lambda: figures.pareto([], unit="tokens", best_cap_w=None, lam=0.5, p_max_w=700),
    lambda: figures.carbon_intensity([], [], [], None),
    lambda: figures.emissions_bar([], what="job"),
    lambda: figures.alert_timeline([], T0, T0 + 3600 * NS),
])
def test_empty_data_gives_an_explained_empty_chart_with_axis_units(maker: object) -> None:
    fig = maker()  # type: ignore[operator]
    assert len(fig.data) == 0
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 1 and notes[0].startswith("No ")
    assert _axis_titles(fig), "even an empty chart says what its axes measure"


def _cells(hosts: int, gpus: int) -> list[GpuCell]:
    return [GpuCell(f"node-{h:04d}", str(g), "NVIDIA H100 80GB HBM3", float((h + g) % 100),
                    100.0 + h % 600, 700.0, 0.0) for h in range(hosts) for g in range(gpus)]


def test_heatmap_is_one_image_trace_of_hosts_by_gpus_at_1000_gpus() -> None:
    cells = _cells(125, 8)
    fig = figures.gpu_heatmap(cells, "util_pct")
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    z = fig.data[0].z
    assert len(z) == 8 and all(len(row) == 125 for row in z)
    assert figures.trace_points(fig) == [1000] and 1000 <= MAX_POINTS_PER_TRACE
    assert z[3][2] == pytest.approx(5.0)  # host 2, GPU 3: (2 + 3) % 100
    assert fig.data[0].colorbar.title.text == "GPU utilisation (%)"
    assert "node-0002 · GPU 3" in fig.data[0].text[3][2]


def test_heatmap_power_share_of_limit_and_missing_cells() -> None:
    cells = [GpuCell("a", "0", "m", 10.0, 350.0, 700.0, 0.0), GpuCell("b", "1", "m", None, None, None, 0.0)]
    fig = figures.gpu_heatmap(cells, "power_pct")
    z = fig.data[0].z
    assert z[0][0] == pytest.approx(50.0)
    assert z[1][1] is None and z[0][1] is None and z[1][0] is None  # gaps stay gaps
    assert fig.data[0].colorbar.title.text == "power, % of limit"
    assert figures.gpu_heatmap(cells, "power_w").data[0].colorbar.title.text == "mean power (W)"


def test_job_detail_has_power_throughput_and_per_against_the_baseline() -> None:
    times = [T0 + k * 300 * NS for k in range(4)]
    fig = figures.job_detail(times, [2000.0, 2100.0, None, 1900.0], [10.0, 11.0, None, 9.0],
                             [0.005, 0.0052, None, 0.0047], unit="samples", per_unit="samples/J",
                             baseline=0.005, baseline_source="first hour")
    names = [t.name for t in fig.data]
    assert names == ["power", "throughput", "PER", "baseline (first hour)"]
    assert list(fig.data[0].y) == [2.0, 2.1, None, 1.9]
    assert list(fig.data[3].y) == [0.005, 0.005]
    titles = _axis_titles(fig)
    for want in ("power (kW)", "throughput (samples/s)", "PER (samples/J)", "time (UTC)"):
        assert want in titles


def _caps() -> list[CapPoint]:
    # A frontier of three caps and one dominated cap, per token.
    return [CapPoint(700, 1.0e-5, 7.0e-3, True, 0.0, 2), CapPoint(500, 1.25e-5, 6.2e-3, True, 0.0, 2),
            CapPoint(400, 1.5e-5, 6.0e-3, True, 0.0, 1), CapPoint(600, 1.3e-5, 6.9e-3, False, 0.0, 1)]


def test_pareto_marks_frontier_dominated_and_recommended_cap_with_units() -> None:
    pts = _caps()
    fig = figures.pareto(pts, unit="tokens", best_cap_w=500, lam=0.8, p_max_w=700)
    names = [t.name for t in fig.data]
    assert names[0] == "Pareto frontier" and names[1] == "dominated cap"
    assert any(n.startswith("recommended at η=0.80: 500 W") for n in names)
    star = next(t for t in fig.data if t.name.startswith("recommended"))
    assert star.marker.symbol == "star"
    # scaled per 1M tokens for time (1e-5 s -> 10 s) and per 1k tokens for energy (7e-3 J -> 7 J)
    assert star.x[0] == pytest.approx(12.5) and star.y[0] == pytest.approx(6.2)
    assert list(fig.data[0].text) == ["700 W", "500 W", "400 W"]
    titles = _axis_titles(fig)
    assert "time: GPU-seconds per 1M tokens" in titles and "energy: J per 1k tokens" in titles


def test_pareto_iso_cost_line_passes_through_the_best_point() -> None:
    lam, p_max = 0.6, 700.0
    best = CapPoint(500, 1.25e-5, 6.2e-3, True, lam * 6.2e-3 + (1 - lam) * p_max * 1.25e-5, 2)
    fig = figures.pareto([best, CapPoint(700, 1.0e-5, 7e-3, True, 0.0, 1)], unit="tokens",
                         best_cap_w=500, lam=lam, p_max_w=p_max)
    line = next(t for t in fig.data if t.name.startswith("equal cost"))
    (x0, x1), (y0, y1) = line.x, line.y
    # Interpolate the line at the best point's time: it must hit the best point's energy.
    xb, yb = 12.5, 6.2
    assert y0 + (y1 - y0) * (xb - x0) / (x1 - x0) == pytest.approx(yb, rel=1e-9)


def test_cost_by_cap_highlights_the_lowest() -> None:
    pts = [CapPoint(700, 1e-5, 7e-3, True, 5.0e-3, 1), CapPoint(400, 1.5e-5, 6e-3, True, 4.0e-3, 1)]
    fig = figures.cost_by_cap(pts, unit="tokens", lam=0.5, best_cap_w=400)
    bar = fig.data[0]
    assert list(bar.x) == ["400 W", "700 W"]
    assert list(bar.marker.color) == [figures.GOOD, figures.OTHER]
    assert "cost(η=0.50): J per 1k tokens" in _axis_titles(fig)


def test_carbon_intensity_has_history_forecast_renewables_and_shaded_window() -> None:
    hist = [(T0 + h * 3600 * NS, 300.0 + h, 40.0) for h in range(24)]
    fc = [(T0 + (24 + h) * 3600 * NS, 250.0) for h in range(24)]
    win = [(T0 + 30 * 3600 * NS, T0 + 34 * 3600 * NS, "best 4 h")]
    fig = figures.carbon_intensity(hist, fc, win, T0 + 24 * 3600 * NS)
    assert [t.name for t in fig.data] == ["intensity (measured)", "renewable share",
                                          "intensity (forecast)"]
    assert fig.data[2].line.dash == "dot"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].x0 == figures.iso(T0 + 30 * 3600 * NS)
    titles = _axis_titles(fig)
    assert "grid intensity (g CO₂/kWh)" in titles and "renewable share (%)" in titles


def test_emissions_bar_keeps_the_top_and_sums_the_rest() -> None:
    items = [(f"job-{i}", 1000.0 * (i + 1)) for i in range(20)]
    fig = figures.emissions_bar(items, what="job", limit=5)
    bar = fig.data[0]
    assert list(bar.y)[-1] == "job-19" and next(iter(bar.y)) == "15 others"  # largest on top
    assert next(iter(bar.x)) == pytest.approx(sum(1.0 * (i + 1) for i in range(15)))  # kg
    assert "emissions (kg CO₂)" in _axis_titles(fig)


def test_alert_timeline_draws_one_lane_per_alert_red_while_firing() -> None:
    spans = [AlertSpan("idle · node-1/gpu6", "warning", T0, T0 + 600 * NS),
             AlertSpan("idle · node-1/gpu6", "warning", T0 + 1200 * NS, None),
             AlertSpan("cap · node-0/gpu0", "info", T0 + 60 * NS, T0 + 120 * NS)]
    fig = figures.alert_timeline(spans, T0 - 600 * NS, T0 + 3600 * NS)
    firing = [t for t in fig.data if "firing now" in t.name]
    assert len(firing) == 1 and firing[0].line.color == figures.SEVERITY_COLORS["warning"]
    assert firing[0].x[1] == figures.iso(T0 + 3600 * NS)  # an open alert runs to the range end
    assert set(fig.layout.yaxis.categoryarray) == {"idle · node-1/gpu6", "cap · node-0/gpu0"}


@pytest.mark.parametrize(("value", "text"), [
    (1234.5, "1.2 kW"), (2.5e6, "2.5 MW"), (None, "–"), (float("nan"), "–"), (12.0, "12.0 W")])
def test_power_units(value: float | None, text: str) -> None:
    assert units.power(value) == text


def test_energy_mass_money_and_durations_read_like_an_operator_writes_them() -> None:
    assert units.energy(3.6e6) == "1.00 kWh"
    assert units.energy(3.6e9 * 2.5) == "2.50 MWh"
    assert units.energy(3.6e3) == "1.00 Wh"
    assert units.mass_co2(2.5e6) == "2.5 t CO₂"
    assert units.mass_co2(1234.0) == "1.2 kg CO₂"
    assert units.money(1234.5, "USD") == "$1,234" or units.money(1234.5, "USD") == "$1,235"
    assert units.money(3.456, "CHF") == "3.46 CHF"
    assert units.duration(3725) == "1 h 02 min"
    assert units.duration(90000) == "1 d 1 h"
    assert units.count(1.234e9, "tokens") == "1.23 Gtokens"
    assert units.signed_pct(-3.21) == "−3.2 %"
    assert units.signed_pct(0.01) == "±0.0 %"
    assert units.change_pct(110, 100) == pytest.approx(10.0)
    assert units.change_pct(1, 0) is None


def test_scale_for_picks_a_readable_unit() -> None:
    assert units.scale_for([7e-3, 6e-3], "tokens") == (1e3, "per 1k tokens")
    assert units.scale_for([12.0], "samples") == (1.0, "per sample")
    assert units.scale_for([2e-8], "tokens")[0] == 1e9


def test_renewable_fill_and_best_window_have_different_colours() -> None:
    from dashboard.figures import carbon_intensity

    h = 3600 * 10**9
    hist = [(k * h, 300.0 + k, 40.0 + k) for k in range(6)]
    fig = carbon_intensity(hist, [], [(2 * h, 4 * h, "best 2 h")], 6 * h)
    fills = [t.fillcolor for t in fig.data if t.name == "renewable share"]
    shades = [s.fillcolor for s in fig.layout.shapes if s.type == "rect"]
    assert len(fills) == 1 and len(shades) == 1
    rgb = lambda c: c.split("(")[1].split(",")[:3]  # noqa: E731
    assert rgb(fills[0]) != rgb(shades[0])


def test_health_lines_past_the_cap_draw_the_first_gpus_and_the_mean_of_all() -> None:
    from dashboard.health_figures import MAX_LINES, health_lines

    n = MAX_LINES + 4
    names = [f"node-{i:02d}/gpu0" for i in range(n)]
    times = {name: [T0 + k * 300 * NS for k in range(3)] for name in names}
    # GPU i runs at 40 + i degrees; the last GPU has no value in the middle bucket
    series = {name: {"temp_c": [40.0 + i, 40.0 + i if i < n - 1 else None, 40.0 + i]}
              for i, name in enumerate(names)}
    order = list(reversed(names))  # the table's order (flagged first), not the names'
    drawn = {k: series[k] for k in order[:MAX_LINES]}  # analytics.health reads only those
    mean = (times[names[0]], {"temp_c": [41.0, None, 42.0]})  # the store's mean of all n
    fig = health_lines(times, drawn, "temp_c", order=order, mean=mean, total=n)
    assert [t.name for t in fig.data] == [*order[:MAX_LINES], f"mean of all {n} GPUs"]
    assert list(fig.data[-1].y) == [41.0, None, 42.0]
    few = health_lines(times, {k: series[k] for k in names[:3]}, "temp_c", order=names[:3],
                       mean=mean, total=3)
    assert [t.name for t in few.data] == names[:3]  # under the cap: every GPU, no mean
