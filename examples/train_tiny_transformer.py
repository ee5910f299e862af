"""A tiny transformer language model trained with torch on synthetic data, reporting work and energy to wattlens.

Run it beside an agent (``wattlens collect``) or alone, in which case it
measures this machine itself and writes to the default store::

    python examples/train_tiny_transformer.py --steps 300
    python examples/train_tiny_transformer.py --steps 300 --agent-url http://127.0.0.1:9464
    python examples/train_tiny_transformer.py --steps 300 --store sqlite:///tmp/w.db --amp

The data is learnable (each sequence counts up by a step of its own, modulo
the vocabulary), so the loss falls and the run is a real training run. CPU
here, CUDA where available (``--device``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JOB_NAME = "tiny-transformer"


class TinyLM(nn.Module):
    """Token and position embeddings, a causal transformer encoder, and a tied output head."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, seq_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        block = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.mask: torch.Tensor
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq_len),
                             persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.pos[:t]
        h = self.encoder(h, mask=self.mask[:t, :t], is_causal=True)
        # Logits with the output weights tied to the embedding, scaled so they start small.
        return self.norm(h) @ self.embed.weight.T * self.embed.embedding_dim ** -0.5


class Workload:
    """Model, optimizer and synthetic data: one ``train_step`` is one optimizer step."""

    def __init__(self, *, device: str | torch.device | None = None, batch_size: int = 32,
                 seq_len: int = 32, vocab: int = 128, d_model: int = 64, heads: int = 4,
                 layers: int = 2, amp: bool = False, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = torch.device(device) if device else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size, self.seq_len, self.vocab = batch_size, seq_len, vocab
        self.amp = amp
        self.model = TinyLM(vocab, d_model, heads, layers, seq_len).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-3)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def batch(self) -> torch.Tensor:
        """Sequences start..start+k*i (mod vocab): the next token follows from the last two."""
        start = torch.randint(0, self.vocab, (self.batch_size, 1), generator=self.generator)
        stride = torch.randint(1, 5, (self.batch_size, 1), generator=self.generator)
        steps = torch.arange(self.seq_len + 1).unsqueeze(0)
        return ((start + stride * steps) % self.vocab).to(self.device, non_blocking=True)

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(inputs)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, self.vocab),
                                           targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def run_example(
    steps: int = 300,
    *,
    agent_url: str | None = None,
    store_url: str | None = None,
    job_name: str = JOB_NAME,
    device: str | None = None,
    batch_size: int = 32,
    amp: bool = False,
    seed: int = 0,
    track: bool = True,
    flush_interval_s: float = 1.0,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train for ``steps`` steps and report through wattlens; return what was done.

    ``agent_url`` reports to that agent; ``store_url`` (without an agent URL)
    measures in-process and writes there; neither: the agent at
    WATTLENS_AGENT_URL if one answers, else in-process to WATTLENS_STORE or the
    default store. ``track=False`` trains without wattlens (the benchmark's baseline).
    """
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps!r}")
    work = Workload(device=device, batch_size=batch_size, amp=amp, seed=seed)
    losses: list[float] = []
    started = time.perf_counter()
    summary: dict[str, Any] = {"job": job_name, "device": str(work.device), "steps": steps}
    if not track:
        for _ in range(steps):
            loss = work.train_step(work.batch())
            if not losses:
                losses.append(float(loss))
        losses.append(float(loss))
        summary.update(mode=None, seconds=time.perf_counter() - started)
    else:
        import wattlens
        from wattlens.torch_helper import StepCounter

        mode = "agent" if agent_url else ("standalone" if store_url else "auto")
        with wattlens.job(job_name, kind="train", batch_size=batch_size, agent_url=agent_url,
                          store_url=store_url, mode=mode, tags=tags,
                          planned_samples=steps * batch_size,
                          flush_interval_s=flush_interval_s) as job:
            counter = StepCounter(job, work.model)
            for _ in range(steps):
                batch = work.batch()
                with counter.step(batch[:, :-1]):
                    loss = work.train_step(batch)
                if not losses:
                    losses.append(float(loss))
            losses.append(float(loss))
        summary.update(mode=job.mode, precision=counter.precision,
                       flops_per_step=next(iter(counter.flops_by_shape.values()), 0.0),
                       seconds=time.perf_counter() - started,
                       **{k: v for k, v in job.totals.items() if k != "steps"})
    summary.update(loss_first=losses[0], loss_last=losses[-1])
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: 300)")
    p.add_argument("--agent-url", help="report to this agent (default: WATTLENS_AGENT_URL or "
                                       "http://127.0.0.1:9464 if it answers)")
    p.add_argument("--store", help="no agent: measure in-process and write to this store URL")
    p.add_argument("--job", default=JOB_NAME, help=f"job name (default: {JOB_NAME})")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--amp", action="store_true", help="autocast to bf16")
    p.add_argument("--no-track", action="store_true", help="train without wattlens")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps: must be >= 1, got {args.steps}")
    out = run_example(args.steps, agent_url=args.agent_url, store_url=args.store,
                      job_name=args.job, device=args.device, batch_size=args.batch_size,
                      amp=args.amp, track=not args.no_track)
    rate = out["steps"] / out["seconds"] if out["seconds"] > 0 else math.nan
    print(f"{out['job']}: {out['steps']} steps on {out['device']} in {out['seconds']:.1f} s "
          f"({rate:.0f} steps/s), loss {out['loss_first']:.2f} -> {out['loss_last']:.2f}"
          + (f", reported via {out['mode']}" if out.get("mode") else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
