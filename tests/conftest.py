from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookd.client import HookdClient
from hookd.engine.store.backend import Backend, open_backend
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver
from tests.support.server import HookdProcess, default_database, use_database_factory

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends: run each test of the module against SQLite and against PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: this test is about the SQLite file itself")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests in modules marked ``backends`` run once per store; the rest once, on SQLite."""
    definition = metafunc.definition
    if definition.get_closest_marker("backends") and not definition.get_closest_marker("sqlite_only"):
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run; it must start (nothing skips)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store the module's servers use by default: a new PostgreSQL database for each, or a
    SQLite file. Module-scoped, so a module's shared server is made once per store."""
    name = getattr(request, "param", "sqlite")
    if name == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        use_database_factory(server.new_database)
    else:
        use_database_factory(None)
    try:
        yield name
    finally:
        use_database_factory(None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Backend]:
    """The module's store opened in-process (a SQLite file in the test's directory, or a new
    PostgreSQL database), for tests of the store's operations below the server."""
    backend = open_backend(default_database(tmp_path))
    backend.open(readers=1)
    yield backend
    backend.close()


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
