"""The energy/performance model (E_train, E_inf, P, J = E + λ·P) and zeus's trade-off cost λ·E + (1−λ)·P_max·T."""

from __future__ import annotations

import math
from dataclasses import dataclass

from collector.errors import ConfigError

# The seed objective's λ_J (joules per unit of the inference share P) used by `wattlens report`
# and `wattlens objective` unless given: one kWh. P lies in [0, 1], so a λ_J of a few joules
# adds nothing visible to E (megajoules for any real job); at 1 kWh a job that is all inference
# scores 3.6 MJ above the same energy spent training, on the scale of a job's own energy.
DEFAULT_OBJECTIVE_LAMBDA_J = 3.6e6
# The trade-off weight η (zeus's η, 0..1) in cost = η·E + (1−η)·P_max·T.
DEFAULT_TRADEOFF_WEIGHT = 0.5


def _check(name: str, value: float, *, positive: bool = False) -> float:
    """A finite, non-negative (or positive) number, else ConfigError naming the field and value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}")
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value!r}")
    return float(value)


def check_lambda(lam: float, name: str = "lambda", *, unit_interval: bool = False) -> float:
    """λ must be finite and >= 0; for the trade-off cost it must also lie in [0, 1]."""
    value = _check(name, lam)
    if unit_interval and value > 1:
        raise ConfigError(f"{name}: must be between 0 and 1, got {lam!r}")
    return value


@dataclass(frozen=True)
class EnergyModel:
    """The model's terms, in joules; ``p_inf_share`` (P) is None when E is 0 (0/0 is undefined)."""

    e_train_j: float
    e_inf_j: float
    e_j: float
    p_inf_share: float | None

    def to_dict(self) -> dict[str, float | None]:
        return dict(vars(self))  # flat scalars: asdict's deep copy is not needed


def phase_energy_j(c_w: float, n_samples: float, batch: float, t_batch_s: float,
                   *, names: tuple[str, str, str, str] = ("c", "N", "b", "t")) -> float:
    """Energy of one phase: c·(N/b)·t, with c in W, N samples, b samples per batch, t s per batch."""
    c = _check(names[0], c_w)
    n = _check(names[1], n_samples)
    t = _check(names[3], t_batch_s)
    if n == 0:
        return 0.0  # no batches run: no energy, whatever b is
    b = _check(names[2], batch, positive=True)
    return c * (n / b) * t


def energy_model(c_train_w: float, t_train_s: float, n_train: float, c_inf_w: float,
                 t_inf_s: float, m_inf: float, batch: float,
                 batch_inf: float | None = None) -> EnergyModel:
    """E_train = c_train·(N/b)·t_train; E_inf = c_inf·(M/b)·t_inf; E = E_train + E_inf; P = E_inf/E.

    ``batch`` is b for both phases unless ``batch_inf`` gives inference its own.
    """
    e_train = phase_energy_j(c_train_w, n_train, batch, t_train_s,
                             names=("c_train", "n", "batch", "t_train"))
    e_inf = phase_energy_j(c_inf_w, m_inf, batch if batch_inf is None else batch_inf, t_inf_s,
                           names=("c_inf", "m", "batch_inf" if batch_inf is not None else "batch",
                                  "t_inf"))
    e = e_train + e_inf
    return EnergyModel(e_train, e_inf, e, e_inf / e if e > 0 else None)


def objective_j(e_j: float, p_inf_share: float | None, lam: float) -> float | None:
    """J = E + λ_J·P, with λ_J in joules (P is a share). None when P is undefined (E = 0)."""
    e = _check("E", e_j)
    lam = check_lambda(lam, "objective_lambda_j")
    if p_inf_share is None:
        return None
    p = _check("P", p_inf_share)
    if p > 1:
        raise ConfigError(f"P: the inference share must be between 0 and 1, got {p_inf_share!r}")
    return e + lam * p


def tradeoff_cost(energy_j: float, time_s: float, max_power_w: float, lam: float) -> float:
    """zeus's cost: η·E + (1−η)·P_max·T, in joules, with the trade-off weight η (``lam``) in
    [0, 1]: η=1 minimises energy, η=0 time. Not the seed objective's λ_J, which is in joules."""
    e = _check("energy_j", energy_j)
    t = _check("time_s", time_s)
    p_max = _check("max_power_w", max_power_w, positive=True)
    lam = check_lambda(lam, "tradeoff_weight", unit_interval=True)
    return lam * e + (1 - lam) * p_max * t


@dataclass(frozen=True)
class JobTerms:
    """A job's measured c (W), t (s per batch), sample count and b, and which phase they fill."""

    job: str
    phase: str  # "train" | "inf"
    c_w: float
    t_batch_s: float
    samples: float
    batch: float
    energy_j: float
    active_s: float

    def to_dict(self) -> dict[str, float | str]:
        return dict(vars(self))  # flat scalars: asdict's deep copy is not needed


def job_terms(job: str, kind: str, energy_j: float, active_s: float, samples: float,
              batch_size: float | None) -> JobTerms:
    """Fill the model from measured data (documented in docs/analytics.md).

    c = energy / active time (mean power of all the job's GPUs), N or M = samples
    done, b = the job's reported batch size, t = active time / (samples / b)
    (wall seconds per batch). ``train`` jobs fill the training terms; ``infer``
    and ``batch`` jobs (forward passes only) fill the inference terms. With these
    choices c·(N/b)·t reproduces the measured energy exactly.
    """
    if active_s <= 0:
        raise ConfigError(f"job {job}: active_s is {active_s!r}; the job reported no run time "
                          f"in the window, so c and t cannot be measured")
    if samples <= 0:
        raise ConfigError(f"job {job}: samples is {samples!r}; the job reported no work in the "
                          f"window, so N (or M) and t cannot be measured")
    if batch_size is None or batch_size <= 0:
        raise ConfigError(f"job {job}: batch_size is {batch_size!r}; report batch_size in the job's "
                          f"points or give --batch")
    phase = "train" if kind == "train" else "inf"
    batches = samples / batch_size
    return JobTerms(job, phase, energy_j / active_s, active_s / batches, samples, batch_size,
                    energy_j, active_s)
