"""`wattlens objective`: the energy model E_train + E_inf, P, J = E + λ_J·P, and the trade-off η·E + (1−η)·P_max·T."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from wattlens.config import default_store_url, option

TRAIN = ("c_train", "t_train", "n")
INF = ("c_inf", "t_inf", "m")
TRADEOFF = ("energy_j", "time_s", "max_power_w")
J_PER_KWH = 3.6e6
NS = 1_000_000_000


def nonneg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "objective", help="energy model and objective J = E + λ_J·P, or the trade-off cost (weight η)",
        description="E_train = c_train·(N/b)·t_train, E_inf = c_inf·(M/b)·t_inf, E = E_train + "
                    "E_inf, P = E_inf/E, J = E + λ_J·P. With --energy-j --time-s --max-power-w: "
                    "cost = η·E + (1−η)·P_max·T. With --job: c, t, N or M and b measured "
                    "from a job in the store. See docs/analytics.md.")
    g = p.add_argument_group("energy model")
    g.add_argument("--c-train", type=nonneg, help="training power c_train, W")
    g.add_argument("--t-train", type=nonneg, help="training time per batch t_train, s")
    g.add_argument("--n", type=nonneg, help="training samples N")
    g.add_argument("--c-inf", type=nonneg, help="inference power c_inf, W")
    g.add_argument("--t-inf", type=nonneg, help="inference time per batch t_inf, s")
    g.add_argument("--m", type=nonneg, help="inference samples M")
    g.add_argument("--batch", type=nonneg, help="batch size b, samples")
    g.add_argument("--batch-inf", type=nonneg, help="inference batch size, if not --batch")
    t = p.add_argument_group("trade-off cost")
    t.add_argument("--energy-j", type=nonneg, help="energy E, J")
    t.add_argument("--time-s", type=nonneg, help="time T, s")
    t.add_argument("--max-power-w", type=nonneg, help="P_max, W (the GPU's maximum power limit)")
    j = p.add_argument_group("from a job's measurements")
    j.add_argument("--job", help="job id: fill the model from its data in --store")
    option(p, "--store", default=default_store_url(), help="store URL for --job")
    option(p, "--since", default=None,
           help="with --job: window start (ISO time or a duration before --until; default: the "
                "store's first job point)")
    option(p, "--until", default="latest", help="with --job: window end (ISO, 'now' or 'latest')")
    p.add_argument("--objective-lambda-j", dest="objective_lambda_j", type=nonneg, default=3.6e6,
                   help="λ_J of J = E + λ_J·P, in joules (P is a share, 0..1); default 3.6e6 "
                        "(1 kWh), as in `wattlens report`")
    p.add_argument("--tradeoff-weight", dest="tradeoff_weight", type=nonneg, default=0.5,
                   help="trade-off weight η in [0, 1] of cost = η·E + (1−η)·P_max·T; default 0.5")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--config", help="TOML config file; settings under [objective]")
    p.set_defaults(func=run, _parser=p, _section="objective")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if getattr(args, n) is not None]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require(args: argparse.Namespace, names: tuple[str, ...], what: str) -> None:
    from collector.errors import ConfigError

    missing = [n for n in names if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"{_flag(missing[0])}: needed for {what} (with "
                          f"{', '.join(_flag(n) for n in names)}), got nothing")


def run(args: argparse.Namespace) -> int:
    from collector.errors import ConfigError

    lam, weight = args.objective_lambda_j, args.tradeoff_weight
    if not 0 <= weight <= 1:
        raise ConfigError(f"--tradeoff-weight: must be between 0 and 1, got {weight!r}")
    trade = _given(args, TRADEOFF)
    model = _given(args, (*TRAIN, *INF, "batch", "batch_inf"))
    if args.job and trade:
        raise ConfigError(f"--job: cannot be combined with {_flag(trade[0])}; the trade-off cost of a "
                          f"job is printed with --job already")
    if trade and model:
        raise ConfigError(f"{_flag(model[0])}: the energy model and the trade-off cost "
                          f"({', '.join(_flag(n) for n in TRADEOFF)}) are separate; give one")
    if trade:
        _require(args, TRADEOFF, "the trade-off cost")
        return _print(tradeoff_result(args.energy_j, args.time_s, args.max_power_w, weight),
                      args.json)
    if args.job:
        return _print(job_result(args, lam, weight), args.json)
    train, inf = _given(args, TRAIN), _given(args, INF)
    if not train and not inf:
        raise ConfigError("objective: nothing to compute; give --c-train --t-train --n and/or "
                          "--c-inf --t-inf --m with --batch, or --energy-j --time-s --max-power-w, "
                          "or --job ID")
    if train:
        _require(args, TRAIN, "the training term E_train")
    if inf:
        _require(args, INF, "the inference term E_inf")
    if args.batch is None:
        raise ConfigError("--batch: the batch size b is needed, got nothing")
    return _print(model_result({n: getattr(args, n) or 0.0 for n in (*TRAIN, *INF)}, args.batch,
                               args.batch_inf, lam), args.json)


def model_result(values: dict[str, float], batch: float, batch_inf: float | None, lam: float,
                 source: dict[str, str] | None = None) -> dict[str, Any]:
    from analytics.objective import energy_model, objective_j

    m = energy_model(values["c_train"], values["t_train"], values["n"], values["c_inf"],
                     values["t_inf"], values["m"], batch, batch_inf)
    return {"mode": "model", "inputs": {**values, "batch": batch, "batch_inf": batch_inf},
            "source": source or {}, "objective_lambda_j": lam, "e_train_j": m.e_train_j, "e_inf_j": m.e_inf_j,
            "e_j": m.e_j, "p_inf_share": m.p_inf_share, "j": objective_j(m.e_j, m.p_inf_share, lam)}


def tradeoff_result(energy_j: float, time_s: float, max_power_w: float, lam: float) -> dict[str, Any]:
    from analytics.objective import tradeoff_cost

    return {"mode": "tradeoff", "tradeoff_weight": lam, "energy_j": energy_j, "time_s": time_s,
            "max_power_w": max_power_w, "cost_j": tradeoff_cost(energy_j, time_s, max_power_w, lam)}


def job_result(args: argparse.Namespace, lam: float, weight: float) -> dict[str, Any]:
    """Fill the model from a job's data: see analytics.objective.job_terms for how."""
    from analytics import queries
    from analytics.levels import aggregate_jobs
    from analytics.objective import job_terms
    from analytics.timeutil import Window
    from collector.errors import ConfigError
    from collector.store import redact_url
    from wattlens.commands.report import open_existing_store, resolve_window

    store = open_existing_store(args.store)
    try:
        if args.since is None:
            span = store.time_range("job")
            if span is None:
                raise ConfigError(f"--store: {redact_url(store.url)} holds no job points")
            window = resolve_window(store, "1s", args.until)
            window = Window(min(span[0], window.start_ns), window.end_ns)
        else:
            window = resolve_window(store, args.since, args.until)
        aggs = aggregate_jobs(queries.job_buckets(store, window, 3600, job=args.job))
        agg = aggs.get(args.job)
        if agg is None:
            raise ConfigError(f"--job: no job {args.job!r} in {redact_url(store.url)} in the window")
        p_max = queries.max_power_limit_w(store, window, agg.gpu_model) if agg.gpu_model else None
    finally:
        store.close()
    terms = job_terms(agg.job, agg.kind, agg.energy_j, agg.active_s, agg.work.get("samples", 0.0),
                      args.batch if args.batch is not None else agg.batch_size)
    names = TRAIN if terms.phase == "train" else INF
    measured = dict(zip(names, (terms.c_w, terms.t_batch_s, terms.samples), strict=True))
    values = {n: 0.0 for n in (*TRAIN, *INF)}
    source = {n: "zero (not given)" for n in values}
    other = INF if terms.phase == "train" else TRAIN
    if _given(args, other):
        _require(args, other, "the other phase's term")
    for n in (*TRAIN, *INF):
        if getattr(args, n) is not None:
            values[n], source[n] = getattr(args, n), "flag"
        elif n in measured:
            values[n], source[n] = measured[n], f"measured from job {agg.job}"
    out = model_result(values, terms.batch, args.batch_inf, lam, source)
    out.update({"mode": "job", "job": agg.job, "kind": agg.kind, "gpus": agg.gpus,
                "gpu_model": agg.gpu_model, "measured_energy_j": agg.energy_j,
                "active_s": agg.active_s, "window": [window.start_ns, window.end_ns]})
    if p_max:
        p_job = p_max * max(agg.gpus, 1)
        out["tradeoff"] = tradeoff_result(agg.energy_j, agg.active_s, p_job, weight)
    return out


UNITS = {"c_train": "W", "t_train": "s per batch", "n": "samples", "c_inf": "W",
         "t_inf": "s per batch", "m": "samples"}


def num(x: float) -> str:
    """Six significant digits with thousands separators, without exponents in the everyday range."""
    if x == 0:
        return "0"
    if not math.isfinite(x) or abs(x) >= 1e15 or abs(x) < 1e-4:
        return f"{x}"
    decimals = max(0, 6 - (math.floor(math.log10(abs(x))) + 1))
    text = f"{x:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _j(x: float | None) -> str:
    if x is None:
        return "undefined"
    return f"{num(x)} J ({num(x / J_PER_KWH)} kWh)"


def format_text(r: dict[str, Any]) -> str:
    if r["mode"] == "tradeoff":
        w = r["tradeoff_weight"]
        return (f"cost = η·E + (1−η)·P_max·T = {w:g} × {num(r['energy_j'])} J + {1 - w:g} × "
                f"{num(r['max_power_w'])} W × {num(r['time_s'])} s = {num(r['cost_j'])} J\n")
    i, lam = r["inputs"], r["objective_lambda_j"]
    b_inf = i["batch_inf"] if i["batch_inf"] is not None else i["batch"]
    lines = []
    if r["mode"] == "job":
        lines.append(f"job {r['job']} ({r['kind']}, {r['gpus']} × {r['gpu_model']}): measured "
                     f"{_j(r['measured_energy_j'])} over {r['active_s']:,.0f} s")
        for name, src in r["source"].items():
            lines.append(f"  {name} = {num(i[name])} {UNITS[name]} ({src})")
    lines += [
        f"E_train = c_train·(N/b)·t_train = {num(i['c_train'])} W × ({num(i['n'])} / {num(i['batch'])}) × "
        f"{num(i['t_train'])} s = {_j(r['e_train_j'])}",
        f"E_inf   = c_inf·(M/b)·t_inf = {num(i['c_inf'])} W × ({num(i['m'])} / {num(b_inf)}) × "
        f"{num(i['t_inf'])} s = {_j(r['e_inf_j'])}",
        f"E       = E_train + E_inf = {_j(r['e_j'])}",
    ]
    if r["p_inf_share"] is None:
        lines.append("P       = E_inf / E: undefined (E = 0)")
        lines.append("J       = E + λ_J·P: undefined (P is undefined)")
    else:
        lines.append(f"P       = E_inf / E = {num(r['p_inf_share'])} (inference share of energy, no unit)")
        # J at E's precision; the λ_J·P term is shown on its own, so a small one is not lost
        lines.append(f"J       = E + λ_J·P = {num(r['e_j'])} + {num(lam)} J × {num(r['p_inf_share'])} = "
                     f"{num(r['j'])} J (λ_J·P = {num(lam * r['p_inf_share'])} J)")
    if "tradeoff" in r:
        t = r["tradeoff"]
        w = t["tradeoff_weight"]
        lines.append(f"cost    = η·E + (1−η)·P_max·T = {w:g} × {num(t['energy_j'])} J + {1 - w:g} × "
                     f"{num(t['max_power_w'])} W × {num(t['time_s'])} s = {num(t['cost_j'])} J")
    return "\n".join(lines) + "\n"


def _print(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_text(result), end="")
    return 0
