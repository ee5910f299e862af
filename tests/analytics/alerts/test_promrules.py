"""Exported Prometheus rules: valid for promtool, and they fire (and hold, and clear) in Prometheus' own rule engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from analytics.alerts.promrules import export_rules, glob_to_re2
from analytics.alerts.rules import load_rules, parse_rules
from tests.analytics.alerts.test_rules import EXAMPLE

EVERY_FEATURE = '''
[defaults]
labels = { team = "ml" }

[[rule]]
name = "cap"
kind = "threshold"
above_cap_pct = 98
hysteresis = 15
match = { host = "node-01", model = "NVIDIA \\"quoted\\" A100" }
summary = "{target} at {value:.0f} {unit} (over {threshold})"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40

[[rule]]
name = "drop-auto"
kind = "trend"
drop_pct = 20
hysteresis = 5
job = "llm-[ab]*.v?"

[[rule]]
name = "drop-fixed"
kind = "trend"
drop_pct = 20
unit = "tokens"
baseline_per = 3.5

[[rule]]
name = "gpu-gone"
kind = "absence"
per = "gpu"
for = "10m"

[[rule]]
name = "job-kwh"
kind = "budget"
scope = "job"
max_kwh = 50
period = "7d"

[[rule]]
name = "fleet-kwh"
kind = "budget"
scope = "fleet"
max_kwh = 5000
hysteresis = 100
period = "30d"

[[rule]]
name = "co2"
kind = "budget"
scope = "fleet"
max_kg_co2 = 100
period = "24h"

[[rule]]
name = "carbon"
kind = "carbon"
above_g_per_kwh = 400
'''


def promtool_check(promtool: str, path: Path) -> str:
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_example_rules_pass_promtool(promtool: str, tmp_path: Path) -> None:
    result = export_rules(load_rules(EXAMPLE))
    path = tmp_path / "wattlens.rules.yml"
    path.write_text(result.yaml)
    out = promtool_check(promtool, path)
    assert f"SUCCESS: {len(result.exported)} rules found" in out
    assert set(result.skipped) == {"deferrable-at-carbon-peak", "fleet-co2-budget"}


def test_every_feature_exports_or_says_why(promtool: str, tmp_path: Path) -> None:
    rs = parse_rules(EVERY_FEATURE)
    result = export_rules(rs, group="fleet")
    path = tmp_path / "rules.yml"
    path.write_text(result.yaml)
    promtool_check(promtool, path)
    doc = yaml.safe_load(result.yaml)
    [group] = doc["groups"]
    assert group["name"] == "fleet"
    by_name = {r["alert"]: r for r in group["rules"]}
    assert set(by_name) == set(result.exported)
    assert set(result.skipped) == {"co2", "carbon"}
    assert "deferrable" in result.skipped["carbon"] and "CO2" in result.skipped["co2"]
    for name in result.skipped:
        assert f"# Not exported: {name}:" in result.yaml
    cap = by_name["cap"]
    assert cap["labels"] == {"team": "ml", "severity": "warning", "kind": "threshold"}
    assert 'model="NVIDIA \\"quoted\\" A100"' in cap["expr"]
    assert 'ALERTS{alertname="cap",alertstate="firing"}' in cap["expr"]
    assert cap["annotations"]["summary"] == (
        '{{ $labels.host }}/gpu{{ $labels.gpu }} at {{ $value | printf "%.4g" }} W (over )')
    assert "for" not in by_name["gpu-gone"]  # the silence itself is the duration
    assert "present_over_time(wattlens_gpu_power_watts[10m])" in by_name["gpu-gone"]["expr"]
    assert 'job=~"llm-[ab].*\\\\.v."' in by_name["drop-auto"]["expr"]
    assert "/ 3.5" in by_name["drop-fixed"]["expr"]


def test_glob_to_re2() -> None:
    assert glob_to_re2("nightly-eval-*") == "nightly-eval-.*"
    assert glob_to_re2("a.b?") == "a\\.b."
    assert glob_to_re2("x[!0-9]") == "x[^0-9]"
    assert glob_to_re2("(x)+[") == "\\(x\\)\\+\\["


def test_exported_rules_fire_hold_and_clear_in_prometheus(promtool: str, tmp_path: Path) -> None:
    """Prometheus' own rule engine (promtool test rules) runs the exported rules over series."""
    rs = parse_rules('''
[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
for = "15m"

[[rule]]
name = "hot"
kind = "threshold"
above_w = 650
hysteresis = 25
for = "5m"

[[rule]]
name = "gone"
kind = "absence"
for = "5m"
known_within = "1h"
''')
    (tmp_path / "rules.yml").write_text(export_rules(rs).yaml)

    def gpu(host: str, idx: str, model: str = "A100") -> str:
        return f'{{host="{host}",gpu="{idx}",uuid="u-{host}-{idx}",model="{model}"}}'

    series = [
        # node n1 GPU 6: idle at 55 W the whole time -> idle fires after 15 min
        ("wattlens_gpu_power_watts" + gpu("n1", "6"), "55x40"),
        ("wattlens_gpu_utilization_ratio" + gpu("n1", "6"), "0x40"),
        # GPU 5: idle 10 min between jobs, then busy -> never fires
        ("wattlens_gpu_power_watts" + gpu("n1", "5"), "55x9 300x30"),
        ("wattlens_gpu_utilization_ratio" + gpu("n1", "5"), "0x9 0.9x30"),
        # n2 GPU 0: 660 W (fires), 640 W (inside the hysteresis band: holds), 600 W (clears)
        ("wattlens_gpu_power_watts" + gpu("n2", "0", "H100"), "660x19 640x9 600x10"),
        ("wattlens_gpu_utilization_ratio" + gpu("n2", "0", "H100"), "0.95x40"),
        # n3 stops reporting after 9 min
        ("wattlens_gpu_power_watts" + gpu("n3", "0"), "100x9"),
    ]
    idle_alert = {"exp_labels": {"host": "n1", "gpu": "6", "uuid": "u-n1-6", "model": "A100",
                                 "severity": "warning", "kind": "idle_waste"},
                  "exp_annotations": {"summary": "n1/gpu6 idle (below 5 % util) drawing 55 W",
                                      "unit": "W"}}
    def hot_alert(watts: int) -> dict[str, object]:
        return {"exp_labels": {"host": "n2", "gpu": "0", "uuid": "u-n2-0", "model": "H100",
                               "severity": "warning", "kind": "threshold"},
                "exp_annotations": {"summary": f"n2/gpu0 drew {watts} W (limit 650 W)",
                                    "unit": "W"}}

    gone_alert = {"exp_labels": {"host": "n3", "severity": "warning", "kind": "absence"},
                  "exp_annotations": {"summary": "no gpu data from n3 for 5m", "unit": "s"}}
    checks = [
        ("idle", "10m", []), ("idle", "20m", [idle_alert]), ("idle", "39m", [idle_alert]),
        ("hot", "3m", []), ("hot", "10m", [hot_alert(660)]), ("hot", "25m", [hot_alert(640)]),
        ("hot", "35m", []),
        ("gone", "12m", []), ("gone", "20m", [gone_alert]),
    ]
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": t, "alertname": name, "exp_alerts": exp}
                                for name, t, exp in checks],
        }],
    }
    (tmp_path / "test.yml").write_text(json.dumps(test))  # JSON is YAML
    proc = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
