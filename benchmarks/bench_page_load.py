"""A first page load as a person sees it: a fresh browser opens the Fleet page of a running dashboard.

Run from the repository root, on a store filled earlier (e.g. by
``wattlens simulate write --hours 24 --nodes 125 --gpus 8 --store sqlite:///tmp/fleet.db``)::

    python benchmarks/bench_page_load.py --store sqlite:///tmp/fleet.db --repeat 5

Each load is a new headless Chromium (no HTTP cache) against a dashboard started once, its cache
warmed, as ``wattlens dashboard`` runs; then ``--revisits`` more loads in that browser, as when an
operator comes back (scripts from its cache, compiled code kept from the second visit on).
``--fresh``: also a first load on a ``wattlens dashboard`` process just started, the browser
sent as soon as its port answers (before its background warm-up can finish).
Timed from navigation to the power chart drawn, with the browser's long tasks (main-thread
work over 50 ms: script parsing, rendering, drawing) and the Fleet callbacks' server time.
Measured in the same run, taking turns:

- ``cartesian``: the dashboard as shipped, charts drawn by plotly.js's cartesian bundle;
- ``full`` (the reference): the same app serving plotly.py's full plotly.js bundle instead.

Prints one line a load, then medians and the ratio; docs/benchmarks.md records the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from collector.store import open_store
from dashboard.app import create_app
from dashboard.server import DashboardServer
from wattlens.runtime import settle, tune_gc

# Installed before any script of the page runs: long tasks, and when the power chart is drawn.
PROBE = """
window.__long = [];
new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); })
  .observe({type: 'longtask', buffered: true});
const iv = setInterval(() => {
  const gd = document.querySelector('#fleet-power .js-plotly-plot');
  if (gd && gd._fullLayout && gd.data && gd.data.length) {
    window.__drawn = performance.now(); clearInterval(iv); }
}, 5);
"""


def chrome() -> webdriver.Chrome:
    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1440,1300"):
        o.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


def one_load(url: str, timeout_s: float = 60.0, revisits: int = 0) -> dict[str, Any]:
    """A fresh browser's first load; then ``revisits`` more in the same browser (its HTTP cache
    and compiled scripts kept, as when an operator comes back), their drawn times in ``again_s``."""
    driver = chrome()
    try:
        drawn_ms = _drawn(driver, url, timeout_s)
        time.sleep(0.5)  # the long task that drew it is reported after it ends
        long_ms = driver.execute_script("return window.__long")
        calls = driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('_dash-update-component'))"
            ".map(e => e.responseStart - e.requestStart)")
        plotly = driver.execute_script(
            "return performance.getEntriesByType('resource').filter(e => /plotly/.test(e.name))"
            ".map(e => e.decodedBodySize)")
        again_ms = []
        for _ in range(revisits):
            driver.get("about:blank")
            again_ms.append(_drawn(driver, url, timeout_s))
            time.sleep(0.5)
    finally:
        driver.quit()
    return {"drawn_s": drawn_ms / 1000, "long_s": sum(long_ms) / 1000,
            "longest_s": max(long_ms, default=0) / 1000, "slowest_call_s": max(calls) / 1000,
            "plotly_mb": sum(plotly) / 1e6, "again_s": [t / 1000 for t in again_ms]}


def _drawn(driver: webdriver.Chrome, url: str, timeout_s: float) -> float:
    """Open ``url``; milliseconds from navigation until the power chart is drawn."""
    driver.get(url)
    deadline = time.monotonic() + timeout_s
    while not driver.execute_script("return window.__drawn || null"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the power chart at {url} was not drawn in {timeout_s:.0f} s")
        time.sleep(0.02)
    return float(driver.execute_script("return window.__drawn"))


def serve(store_url: str, full_plotly: bool) -> tuple[DashboardServer, str]:
    app = create_app(open_store(store_url), prewarm=False, full_plotly=full_plotly)
    server = DashboardServer(app, port=0)
    server.start()
    url = f"http://127.0.0.1:{server.port}/?range=24h"
    one_load(url)  # warms the rollup cache and the server's compressed bundles, not timed
    return server, url


def fresh_server_load(store_url: str) -> dict[str, Any]:
    """A first load on a dashboard just started: ``wattlens dashboard`` in a new process, the
    browser sent as soon as its port answers (its caches and compressed scripts still filling)."""
    import os
    import socket
    import subprocess
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "WATTLENS_DASHBOARD_TOKEN"}  # no auth
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "wattlens", "dashboard", "--store",
                                 store_url, "--port", str(port)], stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"wattlens dashboard did not start on port {port}: "
                                           + log.read().decode(errors="replace")[-2000:]) from None
                    time.sleep(0.02)
            return one_load(f"http://127.0.0.1:{port}/?range=24h")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="a store filled earlier (sqlite:///…, influxdb://…)")
    ap.add_argument("--repeat", type=int, default=5, help="loads per variant, taking turns")
    ap.add_argument("--revisits", type=int, default=3,
                    help="loads after the first in the same browser (cache and compiled code kept)")
    ap.add_argument("--fresh", action="store_true",
                    help="also time first loads on a dashboard process just started")
    args = ap.parse_args()
    tune_gc()  # as every wattlens command
    variants = {name: serve(args.store, full) for name, full in (("cartesian", False), ("full", True))}
    settle()  # as `wattlens dashboard` once its app is built
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(args.repeat):
        for name, (_server, url) in variants.items():
            r = one_load(url, revisits=args.revisits)
            got[name].append(r)
            print(f"{i + 1}/{args.repeat} {name:9s} drawn {r['drawn_s']:.2f} s · long tasks "
                  f"{r['long_s']:.2f} s (longest {r['longest_s']:.2f} s) · slowest callback "
                  f"{r['slowest_call_s']:.2f} s · plotly.js {r['plotly_mb']:.1f} MB · again "
                  + ", ".join(f"{t:.2f}" for t in r["again_s"]) + " s", flush=True)
    med = {name: statistics.median(r["drawn_s"] for r in rs) for name, rs in got.items()}
    for name, rs in got.items():
        drawn = sorted(r["drawn_s"] for r in rs)
        print(f"{name}: drawn median {med[name]:.2f} s ({drawn[0]:.2f}–{drawn[-1]:.2f}), long tasks "
              f"median {statistics.median(r['long_s'] for r in rs):.2f} s")
        for k in range(args.revisits):
            again = sorted(r["again_s"][k] for r in rs)
            print(f"{name}: visit {k + 2} in the same browser: median "
                  f"{statistics.median(again):.2f} s ({again[0]:.2f}–{again[-1]:.2f})")
    print(f"cartesian ÷ full: {med['cartesian'] / med['full']:.2f}")
    for server, _url in variants.values():
        server.stop()
    if args.fresh:
        fresh = sorted(fresh_server_load(args.store)["drawn_s"] for _ in range(args.repeat))
        print(f"a dashboard just started (`wattlens dashboard`, the browser sent as its port "
              f"answers): drawn median {statistics.median(fresh):.2f} s "
              f"({fresh[0]:.2f}–{fresh[-1]:.2f}), {statistics.median(fresh) / med['cartesian']:.2f}"
              f" × a warmed one")


if __name__ == "__main__":
    main()
