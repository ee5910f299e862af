"""Figure builders: data in, go.Figure out. No Dash import, so they are unit-tested without a browser."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from analytics import units
from analytics.queries import GpuCell, Series

# No trace carries more points than this; views size their buckets to the chart's width
# so the budget holds (an 1,800 px chart gets at most ~600 buckets).
MAX_POINTS_PER_TRACE = 5000
FONT = "Inter, Segoe UI, system-ui, -apple-system, sans-serif"
INK = "#0f172a"
MUTED = "#64748b"
GRID = "#e2e8f0"
ACCENT = "#2563eb"
GOOD = "#16a34a"
BAD = "#dc2626"
WARN = "#d97706"
OTHER = "#94a3b8"
PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#be123c")
SEVERITY_COLORS = {"critical": BAD, "page": BAD, "warning": WARN, "info": ACCENT}
HEAT_METRICS: dict[str, tuple[str, str]] = {
    # metric -> (colorbar title with unit, colour scale)
    "util_pct": ("GPU utilisation (%)", "Blues"),
    "power_w": ("mean power (W)", "YlOrRd"),
    "power_pct": ("power, % of limit", "YlOrRd"),
}


def _template() -> go.layout.Template:
    """plotly_white's layout, without its per-trace defaults: those include the deprecated
    scattermapbox, whose DeprecationWarning fires on every copy of the full template."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return go.layout.Template(layout=pio.templates["plotly_white"].layout)


TEMPLATE = _template()


def iso(t_ns: int) -> str:
    """A UTC time as Plotly reads it on a date axis: '2026-11-28 10:05:00'."""
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _times(times_ns: Sequence[int]) -> list[str]:
    return [iso(t) for t in times_ns]


def _downsample(xs: list[int], ys: list[float | None],
                limit: int) -> tuple[list[int], list[float | None]]:
    """Keep a trace within the point budget by averaging neighbours (the store already aggregates);
    gaps (None) are left out of a mean, and a run of nothing but gaps stays a gap."""
    if len(xs) <= limit:
        return xs, ys
    step = -(-len(xs) // limit)
    out_x = [xs[i] for i in range(0, len(xs), step)]
    out_y: list[float | None] = []
    for i in range(0, len(ys), step):
        chunk = [y for y in ys[i:i + step] if y is not None]
        out_y.append(sum(chunk) / len(chunk) if chunk else None)
    return out_x, out_y


def base_layout(fig: go.Figure, *, x_title: str | None, y_title: str | None, height: int = 360,
                legend: bool = True) -> go.Figure:
    """The one look of every chart: white card, muted grid, unit in every axis title."""
    fig.update_layout(
        template=TEMPLATE, height=height, font={"family": FONT, "size": 13, "color": INK},
        margin={"l": 64, "r": 24, "t": 28, "b": 48}, paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)", showlegend=legend,
        # Above the plot, left: never on the x-axis title, and plotly grows the top margin to fit.
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0, "xanchor": "left",
                "font": {"size": 12}},
        hoverlabel={"font": {"family": FONT}},
        # Zoom, pan and legend choices survive a refresh: plotly keeps the UI state while
        # uirevision stays the same (callbacks that change the range give it a new value).
        uirevision="keep",
    )
    fig.update_xaxes(gridcolor=GRID, zeroline=False, title={"text": x_title} if x_title else None)
    fig.update_yaxes(gridcolor=GRID, zeroline=False, title={"text": y_title} if y_title else None)
    return fig


def empty(message: str, *, x_title: str | None = None, y_title: str | None = None,
          height: int = 360) -> go.Figure:
    """An honest empty chart: axes with their units and a sentence saying why there is nothing."""
    fig = base_layout(go.Figure(), x_title=x_title, y_title=y_title, height=height, legend=False)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 15, "color": MUTED})
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


# --- fleet ---------------------------------------------------------------------------------------
# The Fleet power chart's height (px): the page reserves it before the first figure arrives, so
# the heatmap below is never drawn under a chart that has not taken its place yet.
POWER_CHART_HEIGHT = 380


def power_over_time(series: Sequence[Series], *, stacked_by: str, title: str = "") -> go.Figure:
    """Stacked area of average power (kW) per group over time; a group named 'other …' is grey."""
    if not series or not any(s.values for s in series):
        return empty("No GPU power in this time range", x_title="time (UTC)",
                     y_title="GPU power (kW)", height=POWER_CHART_HEIGHT)
    fig = go.Figure()
    color_i = 0
    for s in series:
        xs, ys = _downsample(list(s.times_ns), list(s.values), MAX_POINTS_PER_TRACE)  # type: ignore[arg-type]
        if s.name.startswith("other"):
            color = OTHER
        else:
            color = PALETTE[color_i % len(PALETTE)]
            color_i += 1
        fig.add_trace(go.Scatter(
            x=_times(xs), y=[None if v is None else v / 1000 for v in ys], name=s.name, mode="lines",
            stackgroup="power", line={"width": 0.6, "color": color},
            hovertemplate=f"{s.name}: %{{y:,.2f}} kW<extra></extra>",
        ))
    base_layout(fig, x_title="time (UTC)", y_title="GPU power (kW)", height=POWER_CHART_HEIGHT)
    fig.update_layout(hovermode="x unified", legend={"title": {"text": stacked_by}},
                      title={"text": title} if title else None)
    fig.update_xaxes(type="date")
    fig.update_yaxes(rangemode="tozero")
    return fig


def _heat_value(c: GpuCell, metric: str) -> float | None:
    if metric == "util_pct":
        return c.util_pct
    if metric == "power_w":
        return c.power_w
    if c.power_w is None or not c.power_limit_w:
        return None
    return 100.0 * c.power_w / c.power_limit_w


def gpu_heatmap(cells: Sequence[GpuCell], metric: str = "util_pct") -> go.Figure:
    """Hosts across, GPU index down: one cell per GPU, coloured by utilisation, power or power/limit.

    One Heatmap trace (drawn as an image, not SVG), so 1,000 GPUs cost the
    browser no more than 10; hover says host, GPU, model and the value.
    """
    title, scale = HEAT_METRICS.get(metric, HEAT_METRICS["util_pct"])
    if not cells:
        return empty("No GPU reported in this time range", x_title="host", y_title="GPU index",
                     height=300)
    hosts = sorted({c.host for c in cells})
    gpus = sorted({c.gpu for c in cells}, key=lambda g: (len(g), g))
    hi = {h: i for i, h in enumerate(hosts)}
    gi = {g: i for i, g in enumerate(gpus)}
    z: list[list[float | None]] = [[None] * len(hosts) for _ in gpus]
    text: list[list[str]] = [[""] * len(hosts) for _ in gpus]
    unit = "%" if metric != "power_w" else "W"
    for c in cells:
        v = _heat_value(c, metric)
        z[gi[c.gpu]][hi[c.host]] = None if v is None else round(v, 1)
        shown = "–" if v is None else f"{v:,.0f} {unit}"
        text[gi[c.gpu]][hi[c.host]] = (
            f"{c.host} · GPU {c.gpu}<br>{c.model}<br>{title.split(' (')[0]}: {shown}"
            f"<br>utilisation {units.DASH if c.util_pct is None else f'{c.util_pct:.0f} %'}"
            f" · power {units.power(c.power_w)}")
    zmax = 100.0 if metric != "power_w" else None
    fig = go.Figure(go.Heatmap(
        z=z, x=hosts, y=[f"GPU {g}" for g in gpus], text=text, hoverinfo="text",
        colorscale=scale, zmin=0, zmax=zmax, xgap=1 if len(hosts) <= 200 else 0, ygap=1,
        colorbar={"title": {"text": title, "side": "right"}, "thickness": 12},
        hoverongaps=False,
    ))
    height = max(220, min(520, 90 + 26 * len(gpus)))
    base_layout(fig, x_title=f"host ({len(hosts)})", y_title="GPU index", height=height,
                legend=False)
    fig.update_yaxes(autorange="reversed", gridcolor="rgba(0,0,0,0)")
    fig.update_xaxes(gridcolor="rgba(0,0,0,0)", tickangle=-45 if len(hosts) > 12 else 0,
                     nticks=min(len(hosts), 40))
    return fig


# --- jobs ----------------------------------------------------------------------------------------
def job_detail(times_ns: Sequence[int], power_w: Sequence[float | None],
               rate: Sequence[float | None], per_values: Sequence[float | None], *,
               unit: str, per_unit: str, baseline: float | None,
               baseline_source: str = "baseline") -> go.Figure:
    """Power, throughput and PER of one job over time; PER against the job's baseline (dashed)."""
    if not times_ns:
        return empty("No point of this job in the time range", x_title="time (UTC)",
                      y_title="power (kW)", height=520)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.36, 0.32, 0.32])
    x = _times(times_ns)
    fig.add_trace(go.Scatter(x=x, y=[None if p is None else p / 1000 for p in power_w], name="power",
                             mode="lines", fill="tozeroy", line={"color": ACCENT, "width": 1.5},
                             hovertemplate="%{y:,.2f} kW<extra>power</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=list(rate), name="throughput", mode="lines",
                             line={"color": GOOD, "width": 1.5},
                             hovertemplate=f"%{{y:,.3s}} {unit}/s<extra>throughput</extra>"),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=list(per_values), name="PER", mode="lines+markers",
                             marker={"size": 4}, line={"color": "#7c3aed", "width": 1.5},
                             hovertemplate=f"%{{y:.4g}} {per_unit}<extra>PER</extra>"), row=3, col=1)
    if baseline is not None:
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[baseline, baseline], mode="lines",
                                 name=f"baseline ({baseline_source})",
                                 line={"color": MUTED, "dash": "dash", "width": 1.5},
                                 hovertemplate=f"%{{y:.4g}} {per_unit}<extra>baseline</extra>"),
                      row=3, col=1)
    base_layout(fig, x_title=None, y_title=None, height=560)
    fig.update_layout(hovermode="x unified")
    fig.update_yaxes(title_text="power (kW)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=f"throughput ({unit}/s)", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text=f"PER ({per_unit})", row=3, col=1)
    # An honest scale: at least ±20 % around the baseline, so noise does not look like a trend.
    finite = [v for v in per_values if v is not None]
    ref = baseline if baseline is not None else (sum(finite) / len(finite) if finite else None)
    if ref:
        lo, hi = min([*finite, ref * 0.8]), max([*finite, ref * 1.2])
        fig.update_yaxes(range=[max(0.0, lo - 0.05 * (hi - lo)), hi + 0.05 * (hi - lo)], row=3, col=1)
    fig.update_yaxes(title_font={"size": 12})
    fig.update_xaxes(type="date")
    fig.update_xaxes(title_text="time (UTC)", row=3, col=1)
    return fig


# --- trade-off -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CapPoint:
    """One power cap of a workload class, per unit of work (a plain mirror of a FrontierPoint)."""

    cap_w: float
    time_s_per_unit: float
    energy_j_per_unit: float
    on_frontier: bool
    cost_j_per_unit: float
    jobs: int


def pareto(points: Sequence[CapPoint], *, unit: str, best_cap_w: float | None, lam: float,
           p_max_w: float) -> go.Figure:
    """Time vs energy per unit of work over power caps: the frontier, dominated caps in grey, the
    cap that minimises cost(η) starred, and the iso-cost line of cost(η) through it."""
    if not points:
        return empty("No job ran at a known power cap in this range", x_title="time per unit",
                     y_title="energy per unit (J)", height=420)
    tf, tlabel = units.scale_for([p.time_s_per_unit for p in points], unit)
    ef, elabel = units.scale_for([p.energy_j_per_unit for p in points], unit)
    fig = go.Figure()
    front = sorted((p for p in points if p.on_frontier), key=lambda p: p.time_s_per_unit)
    other = [p for p in points if not p.on_frontier]
    if front:
        fig.add_trace(go.Scatter(
            x=[p.time_s_per_unit * tf for p in front], y=[p.energy_j_per_unit * ef for p in front],
            mode="lines+markers+text", name="Pareto frontier", text=[f"{p.cap_w:.0f} W" for p in front],
            textposition="top right", marker={"size": 11, "color": ACCENT},
            line={"color": ACCENT, "width": 2},
            customdata=[[p.cap_w, p.jobs] for p in front],
            hovertemplate=("cap %{customdata[0]:.0f} W · %{customdata[1]} job(s)<br>"
                           f"%{{x:.4g}} GPU-s {tlabel}<br>%{{y:.4g}} J {elabel}<extra></extra>")))
    if other:
        fig.add_trace(go.Scatter(
            x=[p.time_s_per_unit * tf for p in other], y=[p.energy_j_per_unit * ef for p in other],
            mode="markers+text", name="dominated cap", text=[f"{p.cap_w:.0f} W" for p in other],
            textposition="bottom right", marker={"size": 10, "color": OTHER},
            hovertemplate=f"%{{text}}<br>%{{x:.4g}} GPU-s {tlabel}<br>%{{y:.4g}} J {elabel}<extra></extra>"))
    best = next((p for p in points if best_cap_w is not None and p.cap_w == best_cap_w), None)
    if best is not None:
        bx, by = best.time_s_per_unit * tf, best.energy_j_per_unit * ef
        fig.add_trace(go.Scatter(
            x=[bx], y=[by], mode="markers", name=f"recommended at η={lam:.2f}: {best.cap_w:.0f} W",
            marker={"symbol": "star", "size": 22, "color": GOOD, "line": {"color": INK, "width": 1}},
            hovertemplate=f"recommended cap {best.cap_w:.0f} W<extra></extra>"))
        if lam > 0:
            # cost = η·E + (1−η)·P_max·T is constant along E = (C − (1−η)·P_max·T) / η.
            c = best.cost_j_per_unit
            ts = [p.time_s_per_unit for p in points]
            lo, hi = min(ts) * 0.9, max(ts) * 1.1
            line_x = [lo, hi]
            line_y = [(c - (1 - lam) * p_max_w * t) / lam for t in line_x]
            fig.add_trace(go.Scatter(
                x=[t * tf for t in line_x], y=[e * ef for e in line_y], mode="lines",
                name="equal cost(η) through the best cap", hoverinfo="skip",
                line={"color": GOOD, "dash": "dot", "width": 1.2}))
    base_layout(fig, x_title=f"time: GPU-seconds {tlabel}", y_title=f"energy: J {elabel}",
                height=460)
    fig.update_layout(legend={"y": -0.25}, margin={"b": 96})  # below the x-axis title
    energies = [p.energy_j_per_unit * ef for p in points]
    span = max(energies) - min(energies) or max(energies) * 0.1 or 1.0
    fig.update_yaxes(range=[min(energies) - 0.25 * span, max(energies) + 0.25 * span])
    times = [p.time_s_per_unit * tf for p in points]
    tspan = max(times) - min(times) or max(times) * 0.1 or 1.0
    fig.update_xaxes(range=[min(times) - 0.15 * tspan, max(times) + 0.3 * tspan])
    return fig


def cost_by_cap(points: Sequence[CapPoint], *, unit: str, lam: float,
                best_cap_w: float | None) -> go.Figure:
    """cost(η) per unit of work at each cap, the lowest in green: why the star sits where it does."""
    if not points:
        return empty("No caps to compare", x_title="power cap (W)", y_title="cost(η) per unit (J)",
                     height=300)
    pts = sorted(points, key=lambda p: p.cap_w)
    f, label = units.scale_for([p.cost_j_per_unit for p in pts], unit)
    fig = go.Figure(go.Bar(
        x=[f"{p.cap_w:.0f} W" for p in pts], y=[p.cost_j_per_unit * f for p in pts],
        marker={"color": [GOOD if p.cap_w == best_cap_w else OTHER for p in pts]},
        text=[f"{p.cost_j_per_unit * f:.3g}" for p in pts], textposition="outside",
        hovertemplate=f"%{{x}}: %{{y:.4g}} J {label}<extra></extra>"))
    base_layout(fig, x_title="power cap (W)", y_title=f"cost(η={lam:.2f}): J {label}", height=300,
                legend=False)
    top = max(p.cost_j_per_unit * f for p in pts)
    fig.update_yaxes(range=[0, top * 1.2])
    return fig


# --- carbon --------------------------------------------------------------------------------------
def carbon_intensity(hist: Sequence[tuple[int, float, float | None]],
                     forecast: Sequence[tuple[int, float]], windows: Sequence[tuple[int, int, str]],
                     now_ns: int | None) -> go.Figure:
    """Grid intensity (g CO₂/kWh) measured and forecast, renewable share (%) on the right axis, and
    the suggested low-carbon windows shaded green."""
    if not hist and not forecast:
        return empty("No grid carbon intensity for this range", x_title="time (UTC)",
                     y_title="grid intensity (g CO₂/kWh)", height=380)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if hist:
        fig.add_trace(go.Scatter(
            x=_times([h[0] for h in hist]), y=[h[1] for h in hist], name="intensity (measured)",
            mode="lines", line={"color": INK, "width": 2, "shape": "hv"},
            hovertemplate="%{y:.0f} g CO₂/kWh<extra>measured</extra>"), secondary_y=False)
        ren = [(t, r) for t, _g, r in hist if r is not None]
        if ren:
            fig.add_trace(go.Scatter(
                x=_times([t for t, _ in ren]), y=[r for _, r in ren], name="renewable share",
                mode="lines", fill="tozeroy", line={"color": GOOD, "width": 0.8, "shape": "hv"},
                fillcolor="rgba(22,163,74,0.10)", hovertemplate="%{y:.0f} %<extra>renewable</extra>"),
                secondary_y=True)
    if forecast:
        fig.add_trace(go.Scatter(
            x=_times([f[0] for f in forecast]), y=[f[1] for f in forecast], name="intensity (forecast)",
            mode="lines", line={"color": INK, "width": 2, "dash": "dot", "shape": "hv"},
            hovertemplate="%{y:.0f} g CO₂/kWh<extra>forecast</extra>"), secondary_y=False)
    for start, end, label in windows:
        fig.add_vrect(x0=iso(start), x1=iso(end), fillcolor="rgba(37,99,235,0.13)", line_width=0,
                      annotation_text=label, annotation_position="top left",
                      annotation_font={"size": 11, "color": ACCENT})
    if now_ns is not None:
        fig.add_vline(x=iso(now_ns), line={"color": MUTED, "dash": "dash", "width": 1})
    base_layout(fig, x_title="time (UTC)", y_title=None, height=380)
    fig.update_layout(hovermode="x unified")
    fig.update_xaxes(type="date")
    fig.update_yaxes(title_text="grid intensity (g CO₂/kWh)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="renewable share (%)", range=[0, 100], showgrid=False,
                     secondary_y=True)
    return fig


def emissions_bar(items: Sequence[tuple[str, float]], *, what: str, limit: int = 15) -> go.Figure:
    """Horizontal bars of kg CO₂ per job or node, largest on top; the rest summed as 'others'."""
    items = sorted(((n, g) for n, g in items if g is not None and g > 0), key=lambda x: -x[1])
    if not items:
        return empty(f"No {what} emissions in this range", x_title="emissions (kg CO₂)",
                     y_title=what, height=320)
    shown = list(items[:limit])
    rest = items[limit:]
    if rest:
        shown.append((f"{len(rest)} others", sum(g for _, g in rest)))
    shown.reverse()
    fig = go.Figure(go.Bar(
        y=[n for n, _ in shown], x=[g / 1000 for _, g in shown], orientation="h",
        marker={"color": [OTHER if n.endswith(" others") else "#0f766e" for n, _ in shown]},
        text=[units.mass_co2(g) for _, g in shown], textposition="auto",
        hovertemplate="%{y}: %{x:,.2f} kg CO₂<extra></extra>"))
    base_layout(fig, x_title="emissions (kg CO₂)", y_title=None,
                height=max(260, 60 + 24 * len(shown)), legend=False)
    longest = max(len(n) for n, _ in shown)
    fig.update_layout(margin={"l": min(240, 24 + 7 * longest)})  # room for the longest name
    return fig


def sci_bars(jobs: Sequence[dict], *, limit: int = 15) -> go.Figure:
    """SCI per job, g CO₂e per 1,000 units of work, stacked: operational (E·I) and embodied (M).

    ``jobs`` are the report's ``sci.jobs`` rows; jobs with an unknown term are left out."""
    rows = [j for j in jobs if j.get("sci_g_per_unit") is not None and j.get("r")]
    rows = sorted(rows, key=lambda j: -j["sci_g_per_unit"])[:limit]
    if not rows:
        return empty("No job with every SCI term known", x_title="g CO₂e per 1,000 units",
                     y_title="job", height=280)
    rows.reverse()
    names = [f"{j['job']} (per 1k {j['unit']})" for j in rows]
    fig = go.Figure()
    for key, label, color in (("operational_g", "operational E·I", "#0f766e"),
                              ("embodied_g", "embodied M", "#a16207")):
        fig.add_trace(go.Bar(y=names, x=[1000 * (j[key] or 0.0) / j["r"] for j in rows], name=label,
                             orientation="h", marker={"color": color},
                             hovertemplate="%{y}: %{x:.4g} g CO₂e<extra>" + label + "</extra>"))
    base_layout(fig, x_title="g CO₂e per 1,000 units of work", y_title=None,
                height=max(260, 80 + 28 * len(rows)))
    fig.update_layout(barmode="stack", margin={"l": min(300, 24 + 7 * max(len(n) for n in names))})
    return fig


# --- alerts --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertSpan:
    """One firing period of one alert lane (end None: still firing)."""

    lane: str
    severity: str
    start_ns: int
    end_ns: int | None


def alert_timeline(spans: Sequence[AlertSpan], start_ns: int, end_ns: int) -> go.Figure:
    """One lane per alert (rule · target), a thick bar while it fired; red while still firing."""
    if not spans:
        return empty("No alert fired in this range", x_title="time (UTC)", y_title="alert",
                     height=220)
    lanes = sorted({s.lane for s in spans})
    fig = go.Figure()
    by_sev: dict[tuple[str, bool], list[AlertSpan]] = {}
    for s in spans:
        by_sev.setdefault((s.severity, s.end_ns is None), []).append(s)
    for (sev, open_), group in sorted(by_sev.items()):
        xs: list[str | None] = []
        ys: list[str | None] = []
        for s in group:
            xs += [iso(max(s.start_ns, start_ns)), iso(s.end_ns if s.end_ns is not None else end_ns), None]
            ys += [s.lane, s.lane, None]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", name=f"{sev}{' (firing now)' if open_ else ''}",
            line={"width": 14, "color": SEVERITY_COLORS.get(sev, WARN) if open_ else OTHER},
            hovertemplate="%{y}<br>%{x}<extra></extra>"))
    base_layout(fig, x_title="time (UTC)", y_title=None, height=max(200, 80 + 34 * len(lanes)))
    fig.update_xaxes(type="date", range=[iso(start_ns), iso(end_ns)])
    fig.update_yaxes(categoryorder="array", categoryarray=lanes)
    fig.update_layout(margin={"l": 260})
    return fig


def trace_points(fig: go.Figure) -> list[int]:
    """How many points each trace of a figure carries (x length, or cells for a heatmap)."""
    out = []
    for tr in fig.data:
        z = getattr(tr, "z", None)
        if z is not None:
            out.append(sum(len(row) for row in z))
            continue
        x = getattr(tr, "x", None)
        out.append(0 if x is None else len(x))
    return out
