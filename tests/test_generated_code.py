"""The committed protobuf code is exactly what ``make proto`` generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients" / "python" / "hookd" / "v1"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True, capture_output=True
    )
    fresh = tmp_path / "hookd" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in COMMITTED.iterdir() if p.is_file())
    stale = [name for name in names if (fresh / name).read_bytes() != (COMMITTED / name).read_bytes()]
    assert not stale, f"run `make proto`: {stale} differ from proto/"
