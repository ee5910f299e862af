"""Write constraints.txt: the exact versions installed here of wattlens's dependency closure."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def closure(names: list[str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        raw = todo.pop()
        name = re.split(r"[\s<>=!~;\[(]", raw, maxsplit=1)[0].strip()
        extras = re.findall(r"\[([^\]]+)\]", raw.split(";")[0])
        key = name.lower().replace("_", "-")
        if not key:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if key in seen and not extras:
            continue
        seen[key] = dist.version
        wanted = {e.strip() for group in extras for e in group.split(",")}
        for req in dist.requires or []:
            marker = req.split(";", 1)[1] if ";" in req else ""
            m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if m and m.group(1) not in wanted:
                continue
            if "platform_system == \"Windows\"" in marker or "sys_platform == \"win32\"" in marker:
                continue
            todo.append(req.split(";", 1)[0])
    return seen


def main() -> int:
    pins = closure(["wattlens[test,torch]"])
    pins.pop("wattlens", None)
    # A local label (+cpu) names one wheel; the plain version matches the CPU wheel on disk.
    pins = {k: v.split("+", 1)[0] for k, v in pins.items()}
    lines = ["# Exact versions CI installs (scripts/lock.py writes this from a tested environment).",
             *[f"{k}=={v}" for k, v in sorted(pins.items())]]
    (ROOT / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(pins)} packages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
