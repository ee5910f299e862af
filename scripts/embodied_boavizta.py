"""Print the manufacturing (cradle-to-gate) kg CO2e of GPU cards by BoaviztAPI's GPU model, the source
of the Boavizta rows in analytics/data/gpu_embodied.csv.

Usage (boaviztapi is AGPL-3.0 and not a wattlens dependency; run it in its own environment):

    python -m venv /tmp/bv && /tmp/bv/bin/pip install boaviztapi==2.5.0
    /tmp/bv/bin/python scripts/embodied_boavizta.py "NVIDIA H100 SXM 80GB" "NVIDIA L4" ...

For each name from BoaviztAPI's data/crowdsourcing/gpu_specs.csv it sums the "manufacture" phase of
boaviztapi.compute.impacts_computation.gpu_impact_embedded (GPU die by effective area, VRAM dies,
PCB, heatsink, casing, upstream transport; impact "gwp"), and prints distribution and end of life
apart, which the table leaves out. Nothing is allocated over a lifetime here: wattlens amortises
the figure itself (analytics/embodied.py).
"""

from __future__ import annotations

import sys

from boaviztapi.data.factor_provider import get_gpu_impact_factor  # type: ignore[import-not-found]
from boaviztapi.models.component.gpu import ComponentGPU  # type: ignore[import-not-found]


def factor(component: str, phase: str) -> float:
    return float(get_gpu_impact_factor(component, phase, "gwp")["impact"])


def main(names: list[str]) -> None:
    for name in names:
        g = ComponentGPU()
        g.name.set_input(name)
        parts = {
            "die": factor("gpu", "manufacture") * g.gpu_surface.value,
            "vram": factor("vram", "manufacture") * g.vram_surface.value,
            "pcb": factor("pwb", "manufacture") * g.pwb_surface.value,
            "heatsink": factor("heatsink", "manufacture") * g.heatsink_weight.value,
            "casing": factor("casing", "manufacture") * g.casing_weight.value,
            "upstream_transport": factor("upstream_transport", "manufacture") * g.weight.value,
        }
        transport = sum(factor(mode, "distribution") * dist.value * g.weight.value
                        for mode, dist in (("transport_boat", g.transport_boat),
                                           ("transport_truck", g.transport_truck),
                                           ("transport_plane", g.transport_plane)))
        eol = factor("end_of_life", "eol") * g.weight.value
        detail = " ".join(f"{k}={v:.1f}" for k, v in parts.items())
        print(f"{name}: manufacture {sum(parts.values()):.1f} kg CO2e ({detail}); "
              f"distribution {transport:.2f}, end of life {eol:.2f} (not counted)")


if __name__ == "__main__":
    main(sys.argv[1:])
