"""The delivery engine: storage, webhook registry, publishing and one trio actor per destination URL.

The server uses what this package exports and nothing deeper: ``Engine``'s methods, its
configuration, the errors it raises and the plain data it returns.
"""

from hookd.engine.config import EngineConfig
from hookd.engine.core import Engine, EventInput, Page
from hookd.engine.monitor import NodeInfo, Snapshot, Stats
from hookd.engine.store.backend import StartupError
from hookd.engine.store.writer import StoreStatus

__all__ = [
    "Engine",
    "EngineConfig",
    "EventInput",
    "NodeInfo",
    "Page",
    "Snapshot",
    "StartupError",
    "Stats",
    "StoreStatus",
]
