"""The code stays ruff- and mypy-clean: CI fails otherwise, not just `make lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    run(str(BIN / "ruff"), "check", ".")
    run(str(BIN / "ruff"), "format", "--check", ".")


def test_mypy() -> None:
    run(str(BIN / "mypy"), "server/hookd", "engine/hookd", "clients/python/hookd/client", "tests", "scripts", "bench")
