"""prometheus:// over dcgm-exporter: its namespace/pod/container labels land on job rows (per-namespace PER)."""

from __future__ import annotations

import pytest

from collector.store.base import AggregateQuery
from collector.store.prommap import combine
from collector.store.promql import Merger, plan

NS = 1_000_000_000


def test_dcgm_pod_labels_group_job_energy_by_namespace() -> None:
    q = AggregateQuery("job", (("sum", "energy_j"),), 0, 60 * NS, group_by=("namespace",))
    p = plan(q, combine("dcgm-exporter")["job"])
    energy = next(e for e in p.exprs if e.part == "sum_energy_j")
    assert "namespace" in energy.text  # the grouping is pushed down to the engine
    m = Merger(q, p)
    m.add(energy, None, {"namespace": "research"}, 120.0)
    m.add(energy, None, {"namespace": "prod"}, 30.0)
    rows = {r.tags["namespace"]: r.values["sum_energy_j"] for r in m.result()}
    assert rows == {"research": pytest.approx(120.0), "prod": pytest.approx(30.0)}


@pytest.mark.parametrize("tag", ["namespace", "pod", "container"])
def test_dcgm_job_rows_carry_each_pod_label(tag: str) -> None:
    job = combine("dcgm-exporter")["job"]
    for src in job.fields["energy_j"]:
        assert src.labels[tag] == tag  # dcgm-exporter's label has the same name


def test_wattlens_mapping_reads_the_agents_pod_labels_and_mig_series() -> None:
    wl = combine("wattlens")
    assert {"namespace", "pod", "container"} <= set(wl["job"].fields["energy_j"][0].labels)
    assert wl["mig"].fields["energy_j"][0].metric == "wattlens_mig_energy_joules_total"
