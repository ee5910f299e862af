"""How much wattlens job tracking slows a training step, against no tracking and CodeCarbon, in one run.

Each measurement is a fresh worker process training the example tiny
transformer (examples/train_tiny_transformer.py, one torch thread, CPU) for ``--steps`` steps under
one condition; conditions are interleaved over ``--rounds`` rounds and the
median time per step is compared with the untracked run of the same rounds:

- ``none``: no tracking (the reference);
- ``agent``: ``wattlens.job`` + ``StepCounter`` reporting to a real agent
  process (started here: CPU estimate, job tracker, HTTP ingest);
- ``standalone``: ``wattlens.job`` with no agent: in-process power sampling;
- ``codecarbon``: ``codecarbon.EmissionsTracker`` (measure_power_secs=1)
  around the same loop, installed into a throwaway virtual environment from
  PyPI when it is not importable; reported as unavailable if that fails.

It also times ``Job.step`` alone (the per-step cost on the training thread).
Usage: python benchmarks/bench_job_overhead.py [--steps 300] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

CONDITIONS = ("none", "agent", "standalone", "codecarbon")


# --- worker side -----------------------------------------------------------------------


def worker(condition: str, steps: int, agent_url: str | None, store_url: str) -> dict[str, Any]:
    import torch
    from train_tiny_transformer import Workload

    # One compute thread: the measurement then does not depend on how busy the other cores
    # are (the agent, other work on the node), and the tracker's own threads show up as cost.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = Workload(device="cpu", batch_size=32, seed=0)
    batches = [work.batch() for _ in range(steps)]  # data outside the timed loop
    out: dict[str, Any] = {"condition": condition, "steps": steps}

    def loop(step_wrap: Any = None) -> list[float]:
        times = []
        for batch in batches:
            t0 = time.perf_counter()
            if step_wrap is None:
                work.train_step(batch)
            else:
                with step_wrap(batch[:, :-1]):
                    work.train_step(batch)
            times.append(time.perf_counter() - t0)
        return times

    if condition == "none":
        times = loop()
    elif condition in ("agent", "standalone"):
        import wattlens
        from wattlens.torch_helper import StepCounter

        with wattlens.job(f"bench-{condition}", agent_url=agent_url, store_url=store_url,
                          mode=condition, batch_size=32) as job:
            counter = StepCounter(job, work.model)
            times = loop(counter.step)
        out["mode"] = job.mode
    elif condition == "codecarbon":
        from codecarbon import EmissionsTracker

        tracker = EmissionsTracker(measure_power_secs=1, save_to_file=False, log_level="error")
        tracker.start()
        try:
            times = loop()
        finally:
            tracker.stop()
    else:
        raise SystemExit(f"unknown condition {condition!r}")
    out["first_step_s"] = times[0]
    out["median_step_s"] = statistics.median(times[1:])
    out["mean_step_s"] = statistics.fmean(times[1:])
    return out


def micro_step_cost(n: int = 100_000) -> dict[str, float]:
    """Seconds per call on the training thread, no I/O: Job.step, and a whole StepCounter.step."""
    import torch

    import wattlens
    from wattlens.torch_helper import StepCounter

    job = wattlens.Job("micro")
    t0 = time.perf_counter()
    for _ in range(n):
        job.step(samples=32, tokens=1024, flops=1e9)
    step_s = (time.perf_counter() - t0) / n
    counter = StepCounter(job, torch.nn.Linear(4, 4))
    batch = torch.zeros(32, 33, dtype=torch.long)
    with counter.step(batch):  # the one measured step of this shape
        pass
    m = n // 10
    t0 = time.perf_counter()
    for _ in range(m):
        with counter.step(batch):
            pass
    counter_s = (time.perf_counter() - t0) / m
    return {"job_step_s": step_s, "counter_step_s": counter_s}


# --- orchestration -----------------------------------------------------------------------


BENCH_TOKEN = "bench-agent-token-0123456789"  # noqa: S105 - a throwaway loopback token
AGENT_SCRIPT = """
import sys, threading, signal
sys.path.insert(0, {root!r})
from collector.agent import Agent
from collector.exporter import Exporter
from collector.ingest import IngestApp, with_jobs
from collector.sources.cpu_estimate import CpuEstimateSource
from collector.store import open_store
store = open_store({store!r})
sources, tracker = with_jobs([CpuEstimateSource(host="bench")], "bench")
agent = Agent(sources, store, 1.0)
exporter = Exporter(agent.stats, host="127.0.0.1", port=0, token={token!r})
agent.observers.append(exporter)
IngestApp(tracker, token={token!r}).mount(exporter)  # TCP ingest needs the token
exporter.start()
print(exporter.url, flush=True)
signal.signal(signal.SIGTERM, lambda *a: agent.stop())
agent.run()
exporter.stop()
"""


def start_agent(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    script = AGENT_SCRIPT.format(root=str(ROOT), store=f"sqlite:///{tmp / 'agent.db'}",
                                 token=BENCH_TOKEN)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError("benchmark agent did not start")
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 - loopback
        resp.read()
    return proc, url


def codecarbon_python(tmp: Path, install: bool) -> tuple[str | None, str]:
    """A python that can import codecarbon: this one, or a throwaway venv that installs it."""
    try:
        import codecarbon

        return sys.executable, f"codecarbon {codecarbon.__version__} (already installed)"
    except ImportError:
        pass
    if not install:
        return None, "codecarbon not installed and --no-install given"
    venv = tmp / "cc-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True, capture_output=True, timeout=300)
        py = str(venv / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "codecarbon"], check=True, capture_output=True, timeout=600)
        version = subprocess.run([py, "-c", "import codecarbon; print(codecarbon.__version__)"],
                                 check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        return None, f"codecarbon unavailable: pip install failed: {text.strip()[-300:] or exc}"
    return py, f"codecarbon {version.stdout.strip()} (installed from PyPI into a throwaway venv)"


def run_worker(python: str, condition: str, steps: int, agent_url: str | None,
               store_url: str) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", condition, "--steps", str(steps), "--store", store_url]
    if agent_url:
        cmd += ["--agent-url", agent_url]
    env = {**os.environ, "WATTLENS_INTERVAL": "1.0", "PYTHONPATH": str(ROOT),
           "WATTLENS_AGENT_TOKEN": BENCH_TOKEN}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker {condition} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-install", action="store_true", help="do not pip install codecarbon")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=CONDITIONS, help=argparse.SUPPRESS)
    p.add_argument("--agent-url", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.agent_url, args.store)))
        return 0

    with tempfile.TemporaryDirectory(prefix="wattlens-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store_url = f"sqlite:///{tmp / 'standalone.db'}"
        cc_python, cc_note = codecarbon_python(tmp, install=not args.no_install)
        print(cc_note, flush=True)
        agent, agent_url = start_agent(tmp)
        results: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
        try:
            for r in range(args.rounds):
                for condition in CONDITIONS:
                    python = cc_python if condition == "codecarbon" else sys.executable
                    if python is None:
                        continue
                    res = run_worker(python, condition, args.steps,
                                     agent_url if condition == "agent" else None, store_url)
                    results[condition].append(res)
                    print(f"round {r + 1} {condition:>10}: median step "
                          f"{res['median_step_s'] * 1e3:.2f} ms, first step "
                          f"{res['first_step_s'] * 1e3:.1f} ms", flush=True)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        micro = micro_step_cost()
    summary: dict[str, Any] = {"steps": args.steps, "rounds": args.rounds, "codecarbon": cc_note,
                               "job_step_call_us": micro["job_step_s"] * 1e6,
                               "step_counter_call_us": micro["counter_step_s"] * 1e6,
                               "conditions": {}}
    base = statistics.median(r["median_step_s"] for r in results["none"])
    print(f"\nreference (no tracking): {base * 1e3:.2f} ms/step; per call on the training thread: "
          f"Job.step {micro['job_step_s'] * 1e6:.2f} us, StepCounter.step "
          f"{micro['counter_step_s'] * 1e6:.2f} us")
    for condition in CONDITIONS:
        runs = results[condition]
        if not runs:
            print(f"{condition:>10}: not measured ({cc_note})")
            continue
        # Paired with the untracked run of the same round: the machine's load drifts between rounds.
        ratios = [r["median_step_s"] / ref["median_step_s"]
                  for r, ref in zip(runs, results["none"], strict=False)]
        first = [r["first_step_s"] / ref["first_step_s"]
                 for r, ref in zip(runs, results["none"], strict=False)]
        med = statistics.median(r["median_step_s"] for r in runs)
        summary["conditions"][condition] = {
            "median_step_ms": med * 1e3, "slowdown_ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "first_step_ratio": statistics.median(first)}
        print(f"{condition:>10}: {med * 1e3:.2f} ms/step, x{statistics.median(ratios):.3f} of "
              f"untracked, paired by round (x{min(ratios):.3f}..x{max(ratios):.3f}); first step "
              f"x{statistics.median(first):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
