"""torch integration: FLOPs once per shape, precision from what matmuls ran in, a real training via the agent."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import wattlens
from collector.store.base import AggregateQuery
from tests.wattlens.test_jobs_api import job_sums, live_agent
from wattlens.torch_helper import StepCounter, WattlensCallback, batch_counts, precision_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from train_tiny_transformer import run_example

B, D_IN, D_HID, D_OUT = 8, 16, 32, 4


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, D_OUT))


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad()
    model(x).square().mean().backward()


def test_flops_are_measured_once_per_shape_and_match_the_analytic_count() -> None:
    model = mlp()
    job = wattlens.Job("flops")  # not started: counting alone needs no agent
    counter = StepCounter(job, model)
    for batch in [torch.randn(B, D_IN)] * 5 + [torch.randn(2 * B, D_IN)] * 3:
        with counter.step(batch):
            train_step(model, batch)
    assert counter.measured_steps == 2
    # Linear forward 2·b·in·out; backward: weight grad for both layers, input grad for the second
    # only (the input needs none).
    per_step = {b: 2 * b * D_IN * D_HID * 2 + 2 * b * D_HID * D_OUT * 3 for b in (B, 2 * B)}
    assert job.totals["flops"] == 5 * per_step[B] + 3 * per_step[2 * B]
    assert job.totals["samples"] == 5 * B + 3 * 2 * B and job.totals["steps"] == 8
    # And FlopCounterMode agrees with itself run separately on one step of each shape.
    for b in (B, 2 * B):
        with FlopCounterMode(display=False) as fc:
            train_step(model, torch.randn(b, D_IN))
        assert fc.get_total_flops() == per_step[b]


def test_a_step_that_raises_is_not_counted() -> None:
    model = mlp()
    job = wattlens.Job("fails")
    counter = StepCounter(job, model)
    with pytest.raises(RuntimeError), counter.step(torch.randn(B, D_IN)):
        raise RuntimeError("out of memory")
    assert job.totals["steps"] == 0


@pytest.mark.parametrize(("dtype", "autocast", "expected"), [
    (torch.float32, False, "fp32"),
    (torch.float32, True, "amp-bf16"),
    (torch.bfloat16, False, "bf16"),
])
def test_precision_is_what_the_matmuls_ran_in(dtype: torch.dtype, autocast: bool, expected: str) -> None:
    model = mlp().to(dtype)
    job = wattlens.Job("precision")
    counter = StepCounter(job, model)
    x = torch.randn(B, D_IN, dtype=dtype)
    with counter.step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = model(x)
        y.float().sum().backward()
    assert counter.precision == expected
    assert job.metadata["precision"] == expected


def test_declared_precision_is_kept() -> None:
    job = wattlens.Job("declared", precision="fp16")
    model = mlp()
    with StepCounter(job, model).step(torch.randn(B, D_IN)):
        train_step(model, torch.randn(B, D_IN))
    assert job.metadata["precision"] == "fp16"


def test_tf32_on_cuda_only() -> None:
    assert precision_of({torch.float32}, torch.float32, "cpu") == "fp32"
    assert precision_of({torch.float16}, torch.float32, "cuda") == "amp-fp16"
    assert precision_of(set(), torch.bfloat16) == "bf16"
    assert precision_of(set(), None) is None


def test_batch_counts_read_shapes_only() -> None:
    ids = torch.randint(0, 100, (4, 16))
    assert batch_counts(ids) == (4, 64)
    assert batch_counts({"attention_mask": torch.ones(4, 16), "input_ids": ids}) == (4, 64)
    assert batch_counts((torch.randn(6, 3, 32, 32), torch.zeros(6))) == (6, 0)
    assert batch_counts(None) == (0, 0)


def test_a_real_training_reports_samples_flops_and_energy_through_the_agent(tmp_path: Path) -> None:
    with live_agent(tmp_path, interval_s=0.2) as live:
        out = run_example(40, agent_url=live.url, batch_size=16, flush_interval_s=0.2)
        live.drain()
        assert out["mode"] == "agent" and out["loss_last"] < out["loss_first"]
        sums = job_sums(live.store, "tiny-transformer")
        assert sums["samples"] == 40 * 16 and sums["steps"] == 40
        assert sums["tokens"] == 40 * 16 * 32
        assert out["flops_per_step"] > 0 and sums["flops"] == 40 * out["flops_per_step"]
        assert sums["energy_j"] > 0
        rows = live.store.query(AggregateQuery("job", (("sum", "samples"),), 0, 2**62,
                                               group_by=("precision", "method"),
                                               where={"job": "tiny-transformer"}))
        worked = {(r.tags["precision"], r.tags["method"]) for r in rows if r.values["sum_samples"]}
        assert worked == {("fp32", "cpu-time")}, [(r.tags, r.values) for r in rows]


def test_hugging_face_callback_reports_per_rank_samples_and_rank0_totals(tmp_path: Path) -> None:
    # TrainingArguments / TrainerState attributes by their transformers names.
    args = SimpleNamespace(per_device_train_batch_size=8, gradient_accumulation_steps=2, world_size=2,
                           bf16=True, fp16=False, tf32=False, run_name="runs/exp 1",
                           device=torch.device("cpu"))
    state = SimpleNamespace(is_world_process_zero=True, max_steps=5, total_flos=0.0,
                            num_input_tokens_seen=0)
    with live_agent(tmp_path) as live:
        cb = WattlensCallback(agent_url=live.url, flush_interval_s=0.1)
        control = SimpleNamespace()
        cb.on_init_end(args, state, control)  # an event it does not need: accepted, ignored
        cb.on_train_begin(args, state, control, model=mlp())
        for _ in range(5):
            cb.on_step_begin(args, state, control)
            state.num_input_tokens_seen += 2 * 8 * 2 * 128  # gathered over both ranks by Trainer
            cb.on_step_end(args, state, control)
        state.total_flos = 3.5e12
        cb.on_log(args, state, control, logs={"loss": 1.0})
        cb.on_train_end(args, state, control)
        live.drain()
        assert cb.job is not None and cb.job.name == "runs-exp-1"
        sums = job_sums(live.store, "runs-exp-1")
        assert sums["samples"] == 5 * 8 * 2  # this rank's share
        assert sums["steps"] == 5 and sums["tokens"] == 5 * 2 * 8 * 2 * 128 and sums["flops"] == 3.5e12
        assert cb.job.metadata["precision"] == "amp-bf16"
        assert cb.job.metadata["planned_samples"] == 5 * 8 * 2 * 2
