"""The energy model, J = E + λ·P and the trade-off cost, against values computed by hand."""

from __future__ import annotations

import pytest

from analytics.objective import energy_model, job_terms, objective_j, tradeoff_cost
from collector.errors import ConfigError


def test_energy_model_by_hand() -> None:
    # E_train = 300 W × (1,000,000 / 32) × 0.25 s = 300 × 31,250 × 0.25 = 2,343,750 J
    # E_inf   = 150 W × (500,000 / 32) × 0.05 s   = 150 × 15,625 × 0.05 = 117,187.5 J
    m = energy_model(300, 0.25, 1_000_000, 150, 0.05, 500_000, 32)
    assert m.e_train_j == 2_343_750
    assert m.e_inf_j == 117_187.5
    assert m.e_j == 2_460_937.5
    assert m.p_inf_share == pytest.approx(1 / 21)  # 117,187.5 / 2,460,937.5
    assert objective_j(m.e_j, m.p_inf_share, 0.0) == 2_460_937.5


def test_j_minus_e_is_lambda_times_p_exactly() -> None:
    # E_train = 100 W × (96 / 32) × 1 s = 300 J; E_inf = 100 W × (32 / 32) × 1 s = 100 J:
    # E = 400 J and P = 1/4, both exact in binary, so J − E must equal λ_J·P to the bit.
    m = energy_model(100, 1, 96, 100, 1, 32, 32)
    assert (m.e_j, m.p_inf_share) == (400.0, 0.25)
    for lam_j in (0.0, 1.0, 3.6e6, 2_000_000.0):
        j = objective_j(m.e_j, m.p_inf_share, lam_j)
        assert j is not None and j - m.e_j == lam_j * 0.25
    # A λ_J of half a joule is invisible next to a megajoule job only if the test is blind to it:
    big = energy_model(300, 0.25, 1_000_000, 150, 0.05, 500_000, 32)
    j = objective_j(big.e_j, big.p_inf_share, 0.5)
    assert j is not None and j != big.e_j and j - big.e_j == pytest.approx(0.5 / 21, abs=1e-9)


def test_separate_inference_batch() -> None:
    # E_inf = 100 W × (640 / 64) × 0.5 s = 500 J, with the training batch 32 unused by inference.
    m = energy_model(0, 0, 0, 100, 0.5, 640, 32, batch_inf=64)
    assert (m.e_train_j, m.e_inf_j, m.p_inf_share) == (0.0, 500.0, 1.0)


def test_a_single_sample() -> None:
    # One sample in a batch of one, 2 ms at 250 W: 0.5 J, all training.
    m = energy_model(250, 0.002, 1, 0, 0, 0, 1)
    assert m.e_j == pytest.approx(0.5)
    assert m.p_inf_share == 0.0
    assert objective_j(m.e_j, m.p_inf_share, 3.0) == m.e_j  # P = 0: J = E exactly


def test_zero_energy_leaves_p_and_j_undefined_not_zero() -> None:
    m = energy_model(0, 1, 0, 0, 1, 0, 32)
    assert m.e_j == 0 and m.p_inf_share is None
    assert objective_j(m.e_j, m.p_inf_share, 0.5) is None


def test_no_work_is_zero_energy_whatever_the_batch() -> None:
    m = energy_model(300, 0.25, 0, 150, 0.05, 100, 10)
    assert m.e_train_j == 0 and m.e_inf_j == 150 * 10 * 0.05
    assert m.p_inf_share == 1.0


@pytest.mark.parametrize(("kwargs", "field", "value"), [
    ({"c_train_w": -1.0}, "c_train", "-1.0"),
    ({"t_inf_s": float("nan")}, "t_inf", "nan"),
    ({"batch": 0}, "batch", "0"),
    ({"m_inf": float("inf")}, "m", "inf"),
])
def test_bad_input_names_the_field_and_value(kwargs: dict[str, float], field: str, value: str) -> None:
    args = {"c_train_w": 300.0, "t_train_s": 0.25, "n_train": 1000.0, "c_inf_w": 100.0,
            "t_inf_s": 0.1, "m_inf": 100.0, "batch": 10.0, **kwargs}
    with pytest.raises(ConfigError) as err:
        energy_model(**args)
    assert str(err.value).startswith(f"{field}:") and value in str(err.value)


def test_objective_rejects_a_share_above_one() -> None:
    with pytest.raises(ConfigError, match=r"P: .*1\.5"):
        objective_j(10.0, 1.5, 0.5)


def test_tradeoff_cost_by_hand() -> None:
    # λ·E + (1−λ)·P_max·T = 0.25 × 1000 + 0.75 × 300 × 10 = 250 + 2250
    assert tradeoff_cost(1000, 10, 300, 0.25) == 2500
    assert tradeoff_cost(1000, 10, 300, 1.0) == 1000  # λ = 1: energy only
    assert tradeoff_cost(1000, 10, 300, 0.0) == 3000  # λ = 0: time only (× P_max)
    assert tradeoff_cost(0, 0, 300, 0.5) == 0


@pytest.mark.parametrize(("args", "field"), [
    ((1000, 10, 300, 1.5), "tradeoff_weight"), ((1000, 10, 0, 0.5), "max_power_w"),
    ((-1, 10, 300, 0.5), "energy_j"), ((1000, -2, 300, 0.5), "time_s"),
])
def test_tradeoff_cost_bad_input(args: tuple[float, float, float, float], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        tradeoff_cost(*args)


def test_job_terms_reproduce_the_measured_energy() -> None:
    # 1000 J over 100 s for 320 samples in batches of 32: c = 10 W, 10 batches, t = 10 s per batch.
    t = job_terms("j", "train", 1000.0, 100.0, 320.0, 32.0)
    assert (t.phase, t.c_w, t.t_batch_s, t.samples, t.batch) == ("train", 10.0, 10.0, 320.0, 32.0)
    m = energy_model(t.c_w, t.t_batch_s, t.samples, 0, 0, 0, t.batch)
    assert m.e_j == pytest.approx(1000.0)
    assert job_terms("j", "infer", 1000.0, 100.0, 320.0, 32.0).phase == "inf"
    assert job_terms("j", "batch", 1000.0, 100.0, 320.0, 32.0).phase == "inf"


@pytest.mark.parametrize(("active", "samples", "batch", "field"), [
    (0.0, 10.0, 2.0, "active_s"), (10.0, 0.0, 2.0, "samples"), (10.0, 10.0, None, "batch_size"),
])
def test_job_terms_say_what_is_missing(active: float, samples: float, batch: float | None,
                                       field: str) -> None:
    with pytest.raises(ConfigError, match=f"job j: {field}"):
        job_terms("j", "train", 100.0, active, samples, batch)
