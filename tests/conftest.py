from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookd.client import HookdClient
from tests.support.receiver import Receiver
from tests.support.server import HookdProcess


@pytest.fixture
def hookd(tmp_path: Path) -> Iterator[HookdProcess]:
    """A running server with fast retries, so failure paths finish within a test."""
    server = HookdProcess(tmp_path, "--retry-base", "0.05", "--retry-cap", "0.5", "--max-attempts", "4")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(hookd: HookdProcess) -> HookdClient:
    return hookd.client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
