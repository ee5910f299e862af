"""The dashboard's plotly.js: the cartesian partial bundle (a third of the full one to parse, the
largest cost of a first page load), of the version plotly.py was built for, holding every trace
type the dashboard draws."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go
from plotly.basedatatypes import BaseTraceType
from plotly.offline import get_plotlyjs_version

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
BUNDLES = sorted((DASHBOARD / "assets").glob("plotly-*.min.js"))


def _registered(bundle: str) -> set[str]:
    return set(re.findall(r'moduleType:"trace",name:"([a-z0-9]+)"', bundle))


def _drawn() -> set[str]:
    """The trace types the dashboard's figure code builds (every go.<Trace>( in it)."""
    names = {m for path in DASHBOARD.rglob("*.py")
             for m in re.findall(r"\bgo\.([A-Z]\w*)\(", path.read_text())}
    classes = [getattr(go, n) for n in names]
    return {c().type for c in classes if isinstance(c, type) and issubclass(c, BaseTraceType)}


def test_one_bundle_of_the_version_plotly_py_expects() -> None:
    assert len(BUNDLES) == 1, f"expected one plotly bundle in dashboard/assets, got {BUNDLES}"
    head = BUNDLES[0].read_text()[:200]
    assert f"v{get_plotlyjs_version()}" in head, (
        f"{BUNDLES[0].name} is not plotly.js {get_plotlyjs_version()} (plotly.py's): "
        f"`npm pack plotly.js-cartesian-dist-min@{get_plotlyjs_version()}` (docs/dashboard.md)")
    assert BUNDLES[0].name == f"plotly-cartesian-{get_plotlyjs_version()}.min.js"


def test_the_bundle_draws_every_trace_type_the_dashboard_uses() -> None:
    drawn = _drawn()
    assert {"scatter", "bar", "heatmap"} <= drawn  # the scan finds the figures' traces
    registered = _registered(BUNDLES[0].read_text())
    assert "scatter" in registered and len(registered) < 20  # a partial bundle, parsed right
    missing = drawn - registered
    assert not missing, f"trace types {sorted(missing)} are not in {BUNDLES[0].name}"


def test_the_app_imports_numpy_before_any_callback_thread_can(tmp_path: Path) -> None:
    """plotly imports numpy lazily; two callback threads importing it at once made one see it
    half-initialised and fail. With numpy installed, create_app has imported it already."""
    import subprocess
    import sys

    code = ("import sys, importlib.util; from pathlib import Path; import dashboard.app as a; "
            "from collector.store.sqlite import SQLiteStore; "
            "before = 'numpy' in sys.modules; "
            f"a.create_app(SQLiteStore(Path({str(tmp_path / 'db.sqlite')!r}))); "
            "print(before, 'numpy' in sys.modules, importlib.util.find_spec('numpy') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    before, after, installed = out.stdout.split()
    assert before == "False"  # nothing imported it earlier: the call below is what does
    assert after == installed
