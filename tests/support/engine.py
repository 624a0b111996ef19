"""The engine in the test's own process, for logic that needs no server: fast and inspectable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from hookd.engine import Engine, EngineConfig
from hookd.engine.destinations import DestinationPolicy
from tests.support.server import default_database


def local_engine(tmp_path: Path, **settings: Any) -> Engine:
    """An engine on a fresh database (the test's store), allowed to call receivers on 127.0.0.1."""
    return Engine(
        EngineConfig(
            database=default_database(tmp_path),
            destinations=DestinationPolicy.from_entries(["127.0.0.0/8"], allow_http=True),
            **settings,
        )
    )


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll an async predicate until it returns something truthy; return it."""
    with trio.fail_after(timeout):
        while not (value := await predicate()):
            await trio.sleep(0.02)
    return value
