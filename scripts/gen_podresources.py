"""Regenerate collector/k8s/podresources_v1_pb2*.py from the vendored kubelet PodResources v1 proto.

    pip install -c constraints.txt grpcio-tools
    python scripts/gen_podresources.py

The generated modules are committed, so the agent needs only grpcio and protobuf
at run time; rerun this after editing collector/k8s/podresources_v1.proto or bumping protobuf.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "collector" / "k8s"


def main(out: Path = OUT) -> int:
    """Write the stubs into ``out`` (the package by default; the test compares a fresh copy)."""
    code = protoc.main(["protoc", f"-I{OUT}", f"--python_out={out}", f"--pyi_out={out}",
                        f"--grpc_python_out={out}", str(OUT / "podresources_v1.proto")])
    if code != 0:
        return int(code)
    # protoc writes a top-level `import podresources_v1_pb2`; the package needs a relative one.
    grpc_file = out / "podresources_v1_pb2_grpc.py"
    text = grpc_file.read_text()
    grpc_file.write_text(text.replace("\nimport podresources_v1_pb2 as", "\nfrom . import podresources_v1_pb2 as"))
    print(f"wrote {', '.join(p.name for p in sorted(out.glob('podresources_v1_pb2*')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
