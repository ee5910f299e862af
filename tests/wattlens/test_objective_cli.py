"""`wattlens objective`: the model, the trade-off and a job's measured terms, with hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.analytics.handmade import write_small_fleet
from wattlens.cli import main

MODEL = ["objective", "--c-train", "300", "--t-train", "0.25", "--n", "1000000", "--c-inf", "150",
         "--t-inf", "0.05", "--m", "500000", "--batch", "32", "--objective-lambda-j", "0.5"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_model_prints_every_term_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, *MODEL)
    assert rc == 0
    assert "E_train = c_train·(N/b)·t_train = 300 W × (1,000,000 / 32) × 0.25 s = 2,343,750 J" in out
    assert "E_inf   = c_inf·(M/b)·t_inf = 150 W × (500,000 / 32) × 0.05 s = 117,188 J" in out
    assert "P       = E_inf / E = 0.047619" in out
    assert "= 2,460,938 J" in out and "2,460,937.5" not in out  # J = 2,460,937.5 + 0.5 / 21, at E's precision


def test_model_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, *MODEL, "--json")
    r = json.loads(out)
    assert rc == 0 and r["e_train_j"] == 2_343_750 and r["e_inf_j"] == 117_187.5
    assert r["e_j"] == 2_460_937.5 and r["p_inf_share"] == pytest.approx(1 / 21)
    assert r["objective_lambda_j"] == 0.5 and r["j"] != r["e_j"]
    assert r["j"] - r["e_j"] == pytest.approx(0.5 / 21, abs=1e-9)


def test_training_only_and_zero_energy(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "objective", "--c-train", "200", "--t-train", "1", "--n", "64",
                     "--batch", "32", "--json")
    assert rc == 0 and json.loads(out)["e_j"] == 400 and json.loads(out)["p_inf_share"] == 0
    rc, out, _ = run(capsys, "objective", "--c-train", "0", "--t-train", "1", "--n", "64",
                     "--batch", "32")
    assert rc == 0 and "P       = E_inf / E: undefined (E = 0)" in out


def test_tradeoff(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "objective", "--energy-j", "1000", "--time-s", "10", "--max-power-w",
                     "300", "--tradeoff-weight", "0.25")
    assert rc == 0
    assert out.strip() == ("cost = η·E + (1−η)·P_max·T = 0.25 × 1,000 J + 0.75 × 300 W × 10 s "
                           "= 2,500 J")


@pytest.mark.parametrize(("args", "message"), [
    (["--c-train", "300", "--batch", "32"], "--t-train: needed for the training term"),
    (["--c-train", "300", "--t-train", "1", "--n", "5"], "--batch: the batch size b is needed"),
    (["--energy-j", "1", "--time-s", "1", "--max-power-w", "1", "--tradeoff-weight", "1.5"],
     "--tradeoff-weight: must be between 0 and 1, got 1.5"),
    (["--energy-j", "1", "--time-s", "1"], "--max-power-w: needed for the trade-off cost"),
    (["--energy-j", "1", "--n", "3"], "--n: the energy model and the trade-off cost"),
    ([], "nothing to compute"),
])
def test_bad_input_is_one_clear_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                     message: str) -> None:
    rc, out, err = run(capsys, "objective", *args)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_unparseable_number_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["objective", "--c-train", "-5"])
    assert exc.value.code == 2
    assert "argument --c-train: must be a finite number >= 0, got '-5'" in capsys.readouterr().err


def test_job_fills_the_model_from_its_measurements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_small_fleet(tmp_path / "s.db")
    store.close()
    url = f"sqlite:///{tmp_path / 's.db'}"
    rc, out, _ = run(capsys, "objective", "--job", "job-a", "--store", url, "--json")
    r = json.loads(out)
    # job-a: 72,000 J over 7,200 s, 7,200 samples in batches of 10 on one 400 W-limit A100:
    # c = 10 W, 720 batches, t = 10 s per batch, so E_train = 10 × 720 × 10 = 72,000 J.
    assert rc == 0 and r["mode"] == "job"
    assert r["inputs"]["c_train"] == pytest.approx(10.0) and r["inputs"]["t_train"] == pytest.approx(10.0)
    assert r["inputs"]["n"] == 7_200 and r["inputs"]["batch"] == 10
    assert r["e_train_j"] == pytest.approx(72_000) and r["p_inf_share"] == 0
    # cost(0.5) = 0.5 × 72,000 + 0.5 × 400 W × 7,200 s
    assert r["tradeoff"]["cost_j"] == pytest.approx(36_000 + 1_440_000)
    rc, out, _ = run(capsys, "objective", "--job", "job-b", "--store", url, "--json",
                     "--objective-lambda-j", "2", "--tradeoff-weight", "1")
    r = json.loads(out)
    assert r["e_inf_j"] == pytest.approx(14_400) and r["p_inf_share"] == 1.0
    assert r["j"] - r["e_j"] == 2.0  # J − E = λ_J·P with P = 1
    assert r["tradeoff"]["tradeoff_weight"] == 1 and r["tradeoff"]["cost_j"] == pytest.approx(r["e_j"])
    # The other phase from flags: 100 W × (80 / 10) × 0.5 s = 400 J of inference.
    rc, out, _ = run(capsys, "objective", "--job", "job-a", "--store", url, "--c-inf", "100",
                     "--t-inf", "0.5", "--m", "80", "--json")
    r = json.loads(out)
    assert r["e_inf_j"] == pytest.approx(400) and r["p_inf_share"] == pytest.approx(400 / 72_400)
    assert r["source"]["c_inf"] == "flag" and r["source"]["n"].startswith("measured")
    rc, out, err = run(capsys, "objective", "--job", "nope", "--store", url)
    assert rc == 2 and "--job: no job 'nope'" in err
    rc, out, err = run(capsys, "objective", "--job", "job-a", "--store", str(tmp_path / "missing.db"))
    assert rc == 2 and "does not exist" in err


def test_job_store_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write_small_fleet(tmp_path / "e.db").close()
    monkeypatch.setenv("WATTLENS_STORE", f"sqlite:///{tmp_path / 'e.db'}")
    rc, out, _ = run(capsys, "objective", "--job", "job-b")
    assert rc == 0 and "job job-b (infer, 1 × NVIDIA L4)" in out
