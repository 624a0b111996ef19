"""Generate the code for proto/ (messages, gRPC and Connect stubs) into a directory (default: the client package).

Used by ``make proto`` and by the test that proves the committed code is current.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "clients" / "python"


def generate(out: Path) -> None:
    import grpc_tools

    # protoc finds its plugins (protoc-gen-mypy, protoc-gen-connectrpc) on PATH, beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    (out / "hookd" / "v1").mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            # Connect, gRPC-Web and gRPC over HTTP for browsers and curl (hookd_connect.py), on the
            # same google.protobuf messages as the gRPC stubs.
            f"--connectrpc_out={out}",
            "--connectrpc_opt=protobuf=google",
            # Served by reflection so that `grpcurl describe` shows the proto's comments.
            "--include_source_info",
            f"--descriptor_set_out={out / 'hookd' / 'v1' / 'descriptors.binpb'}",
            *sources,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for package in {Path(s).parent for s in sources}:
        (out / package / "py.typed").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
