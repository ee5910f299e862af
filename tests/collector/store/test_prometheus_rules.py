"""docker/prometheus/rules/energy.rules.yml under `promtool test rules`: each family -> one J/s series."""
# ruff: noqa: E501  (promtool test input: one series per line, as promtool reads it)

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[3] / "docker" / "prometheus" / "rules" / "energy.rules.yml"

# dcgm-exporter on MIG: GPU 0 of node-a has two instances that both repeat the device
# counter (60,000 mJ per 15 s = 4 J/s) and both run pod p1; vLLM in p1 makes 100 tokens/s.
# Kepler: package 30 J/s + dram 6 J/s; core (inside package) must not be added.
TEST = f"""
rule_files: [{RULES}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{Hostname="node-a",gpu="0",UUID="GPU-1",modelName="H100",GPU_I_ID="0",pod="p1",namespace="infer"}}'
        values: '1000000+60000x20'
      - series: 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{Hostname="node-a",gpu="0",UUID="GPU-1",modelName="H100",GPU_I_ID="1",pod="p1",namespace="infer"}}'
        values: '1000000+60000x20'
      - series: 'vllm:generation_tokens_total{{pod="p1",node="node-a",model_name="llama"}}'
        values: '0+1500x20'
      - series: 'wattlens_gpu_energy_joules_total{{host="node-b",gpu="0",uuid="GPU-2",model="L4"}}'
        values: '0+750x20'
      - series: 'kepler_node_cpu_joules_total{{node_name="node-a",zone="package",path="p"}}'
        values: '0+450x20'
      - series: 'kepler_node_cpu_joules_total{{node_name="node-a",zone="dram",path="d"}}'
        values: '0+90x20'
      - series: 'kepler_node_cpu_joules_total{{node_name="node-a",zone="core",path="c"}}'
        values: '0+300x20'
    promql_expr_test:
      - expr: wattlens:gpu_energy_joules:rate1m
        eval_time: 4m
        exp_samples:
          - labels: 'wattlens:gpu_energy_joules:rate1m{{host="node-a",gpu="0",uuid="GPU-1",model="H100",source="dcgm-exporter"}}'
            value: 4
          - labels: 'wattlens:gpu_energy_joules:rate1m{{host="node-b",gpu="0",uuid="GPU-2",model="L4",source="wattlens"}}'
            value: 50
      - expr: wattlens:job_energy_joules:rate1m
        eval_time: 4m
        exp_samples:
          - labels: 'wattlens:job_energy_joules:rate1m{{job="p1",host="node-a",source="dcgm-exporter"}}'
            value: 4
      - expr: wattlens:job_tokens:rate1m
        eval_time: 4m
        exp_samples:
          - labels: 'wattlens:job_tokens:rate1m{{job="p1",host="node-a",source="vllm"}}'
            value: 100
      - expr: wattlens:cpu_energy_joules:rate1m
        eval_time: 4m
        exp_samples:
          - labels: 'wattlens:cpu_energy_joules:rate1m{{host="node-a",source="kepler"}}'
            value: 36
"""


def test_energy_rules_turn_each_family_into_one_joules_series(promtool: str, tmp_path: Path
                                                              ) -> None:
    test = tmp_path / "energy_test.yml"
    test.write_text(TEST)
    proc = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("wrong", ["value: 4\n", "value: 36\n"])
def test_the_rule_test_can_fail(promtool: str, tmp_path: Path, wrong: str) -> None:
    """A wrong expectation (MIG counted twice: 8; core added: 56) makes promtool fail."""
    test = tmp_path / "energy_test.yml"
    test.write_text(TEST.replace(wrong, wrong.replace("4", "8").replace("36", "56"), 1))
    proc = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0


def test_energy_board_reads_only_recorded_series_and_is_valid_promql(promtool: str,
                                                                      tmp_path: Path) -> None:
    """docker/grafana/wattlens-energy.json: every query passes promtool, on recorded series only."""
    import json
    import re

    board = json.loads((RULES.parents[2] / "grafana" / "wattlens-energy.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"[A-Za-z_:][\w:]*(?=\{|\[)", expr)) - {
            "sum", "avg_over_time", "by", "on", "and"}
        assert names and all(n.startswith("wattlens:") for n in names), expr
    subs = {"$__range_s": "3600", "$__range": "1h", "$host": ".*"}
    lines = ["groups:", "  - name: board", "    rules:"]
    for i, expr in enumerate(exprs):
        for k, v in subs.items():
            expr = expr.replace(k, v)
        lines += [f"      - record: board:expr_{i}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "board.yml"
    rules.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
