"""The shared backend: PostgreSQL through psycopg 3, for many hookd nodes on one database.

The writer keeps one connection of its own and commits a batch per transaction, as on SQLite;
reads go through a small psycopg-pool pool, which replaces a connection that broke. Connections
run in autocommit mode so transactions are exactly the ``BEGIN`` / ``COMMIT`` the writer issues.

Notifications queued by operations (``Tx.notify``) are sent with ``pg_notify`` inside the
transaction, so listeners hear of a change only when, and if, it commits. Each payload starts
with the sending node's id (``origin``) so a node can skip its own news.

A transaction that loses a deadlock or a serialization conflict to another node's is run again
(a few times) rather than reported: it is nobody's fault. A lost connection, a full disk, a
database shutting down are ``StoreFault``s: the writer holds its work and tries again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg_pool

from hookd.engine.store.backend import StartupError
from hookd.engine.store.postgres_schema import SchemaTooNew, migrate
from hookd.engine.store.sql import Conflict, Dialect, StoreFault, Tx, UniqueViolation, percent_placeholders

log = logging.getLogger("hookd.store")

T = TypeVar("T")

#: Largest NOTIFY payload PostgreSQL takes is 8000 bytes; keep clear of it.
MAX_PAYLOAD = 7900
#: Times a transaction that lost a deadlock or serialization conflict is run again.
CONFLICT_RETRIES = 5
CONNECT_TIMEOUT_S = 10

#: libpq settings that let a connection notice a database gone silent (a host that froze, a
#: network that drops packets without a reset). Without them a statement waits for its reply
#: until the kernel gives up on the retransmissions, a quarter of an hour later, and an idle
#: connection (the LISTEN one, a pooled reader) never notices at all: the node would miss every
#: other node's news. With them, an idle connection is probed after 10 s of quiet, and a
#: connection whose data or probes go unacknowledged for 30 s is ended (``tcp_user_timeout``
#: takes over from the probe count, tcp(7)); so is one whose live database reads nothing of
#: what it is sent for 30 s. Either way the caller gets a ``StoreFault`` and the connection is
#: made again. A URL that sets one of these keeps its own value. (They apply to TCP
#: connections; a Unix socket's peer cannot go silent.)
SILENT_PEER_SETTINGS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, psycopg.errors.LockNotAvailable)


def _classify(error: BaseException) -> Exception | None:
    if isinstance(error, psycopg.errors.UniqueViolation):
        return UniqueViolation(error.diag.table_name or "", str(error))
    if isinstance(error, _CONFLICTS):
        return Conflict(str(error).splitlines()[0])
    if isinstance(error, psycopg.errors.InsufficientResources):  # disk full, out of memory, too many connections
        return StoreFault(f"the database is out of resources: {error.diag.message_primary or error}")
    if isinstance(error, psycopg.errors.IdleInTransactionSessionTimeout):  # see idle_in_transaction_limit_ms
        return StoreFault(f"the database ended a transaction that stood still: {error.diag.message_primary or error}")
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return StoreFault("the database is read-only (a standby?)")
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | psycopg_pool.PoolTimeout):
        return StoreFault(
            f"the database cannot be reached: {str(error).strip().splitlines()[0] if str(error) else error!r}"
        )
    return None


def _executemany(conn: Any, sql: str, rows: list[Sequence[Any]]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(sql, rows)


DIALECT = Dialect(
    name="postgresql",
    translate=percent_placeholders,
    classify=_classify,
    executemany=_executemany,
    for_update=" FOR UPDATE",
    for_share=" FOR SHARE",
)


#: Query parameters that carry a password: libpq takes any connection keyword in the query.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def _masked_parameter(item: str) -> str:
    """One ``key=value`` of a URL's query, its value masked if the key names a password."""
    key, equals, _ = item.partition("=")
    return f"{key}=****" if equals and unquote(key).strip().lower() in _SECRET_PARAMETERS else item


def redact(url: str) -> str:
    """The URL without its passwords, for logs and error messages: the one in ``user:password@``
    and those given as query parameters (``?password=``, ``?sslpassword=``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":****@", 1)
    query = "&".join(_masked_parameter(item) for item in parts.query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide: exactly as given
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def payloads(origin: str, items: set[str]) -> list[str]:
    """``origin`` then the items, one per line, in payloads that fit a NOTIFY."""
    result: list[str] = []
    current: list[str] = []
    size = len(origin) + 1
    for item in sorted(items):
        if current and size + len(item.encode()) + 1 > MAX_PAYLOAD:
            result.append("\n".join([origin, *current]))
            current, size = [], len(origin) + 1
        current.append(item)
        size += len(item.encode()) + 1
    if current:
        result.append("\n".join([origin, *current]))
    return result


def connection_settings(url: str) -> dict[str, Any]:
    """The keyword arguments every connection is made with: autocommit, a connect timeout, and
    the ``SILENT_PEER_SETTINGS`` the URL does not set itself. A URL libpq cannot parse gets no
    extras: connecting reports what is wrong with it."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}
    settings: dict[str, Any] = {"autocommit": True}
    defaults = {"connect_timeout": str(CONNECT_TIMEOUT_S), **SILENT_PEER_SETTINGS}
    settings.update({key: value for key, value in defaults.items() if key not in given})
    return settings


#: The longest a session may sit inside a transaction without a statement, as a share of the
#: lease (and at least ``MIN_IDLE_IN_TRANSACTION_S``).
IDLE_IN_TRANSACTION_SHARE = 0.25
MIN_IDLE_IN_TRANSACTION_S = 2.0


def idle_in_transaction_limit_ms(lease_s: float) -> int:
    """``idle_in_transaction_session_timeout`` for a cluster with leases of ``lease_s``.

    A node stopped in the middle of a transaction (paused, swapped out, stuck in its own process)
    keeps the row locks it took: a heartbeat's lock on its own ``nodes`` row is one, and every
    claim of its slots locks that row first. Left alone, the claim would wait until the node ran
    again, and the claiming node's own heartbeats would queue behind it, so one frozen node would
    stop failover and then the cluster. PostgreSQL ends such a session after this long; a quarter
    of the lease leaves the others' leases time to spare. Between the statements of a live
    transaction hookd spends milliseconds (a few tens at worst, measured on a loaded 2-core
    machine), so the limit, never under two seconds, does not end one that is making progress;
    if it did, the work is a ``StoreFault``, held and tried again. With leases under 8 s the
    floor makes a frozen node hold a claim up to two seconds: the claimant's own sending may
    pause for that long, and nobody sends what it does not own.
    """
    return int(1000 * max(MIN_IDLE_IN_TRANSACTION_S, lease_s * IDLE_IN_TRANSACTION_SHARE))


class PostgresBackend:
    """One writing connection, a pool of readers, and connections for listeners on demand."""

    dialect = DIALECT
    shared = True
    inline_writes = False  # every statement is a network round trip

    def __init__(self, url: str, *, lease_s: float = 10.0) -> None:
        self.url = url
        self._idle_limit_ms = idle_in_transaction_limit_ms(lease_s)
        self.description = redact(url)
        #: The node id that prefixes every notification this backend sends.
        self.origin = ""
        self._writer: psycopg.Connection[Any] | None = None
        self._control: psycopg.Connection[Any] | None = None
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        #: What every connection is made with, on top of the URL.
        self._settings = connection_settings(url)

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Session settings for every new connection: the idle-in-transaction limit, unless the
        URL, the role, the database or the server's configuration sets one (0 included)."""
        row = conn.execute(
            "SELECT source FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"
        ).fetchone()
        if row is not None and row[0] == "default":
            conn.execute(f"SET idle_in_transaction_session_timeout = {self._idle_limit_ms}")

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, **self._settings)
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        # Prepared statements kept per connection, above the default 100: merged writes
        # (delivery_ops.record_successes) have one text per number of rows.
        conn.prepared_max = 256
        return conn

    def open(self, readers: int) -> None:
        try:
            self._writer = self._connect()
            migrate(self._writer)
            self._pool = psycopg_pool.ConnectionPool(
                self.url,
                min_size=readers,
                max_size=readers,
                kwargs=self._settings,
                configure=self._configure,
                open=True,
                name="hookd-readers",
            )
            self._pool.wait(timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, psycopg_pool.PoolTimeout, SchemaTooNew) as error:
            self.close()
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise StartupError(f"cannot use database {self.description}: {reason}") from error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for which in ("_writer", "_control"):
            conn = getattr(self, which)
            if conn is not None:
                conn.close()
                setattr(self, which, None)

    def listener(self, channels: Sequence[str]) -> Listener:
        """A new connection listening on ``channels`` (the caller closes it)."""
        try:
            conn = self._connect()
            for channel in channels:
                conn.execute(f"LISTEN {channel}")
        except psycopg.Error as error:
            kind = _classify(error)
            raise (kind if isinstance(kind, StoreFault) else StoreFault(str(error))) from error
        return Listener(conn)

    def write(self, body: Callable[[Tx], T]) -> T:
        return self._transaction("_writer", body)

    def control(self, body: Callable[[Tx], T]) -> T:
        """Like ``write``, on a connection of its own: cluster membership (heartbeats, leases)
        must never queue behind a large batch of writes."""
        return self._transaction("_control", body)

    def _transaction(self, which: str, body: Callable[[Tx], T]) -> T:
        for attempt in range(CONFLICT_RETRIES + 1):
            conn = self._usable(which)
            tx = Tx(conn, DIALECT)
            try:
                conn.execute("BEGIN")
                result = body(tx)
                for channel, items in tx.notifications.items():
                    for payload in payloads(self.origin, items):
                        conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])
                conn.execute("COMMIT")
                return result
            except BaseException as error:
                self._rollback(conn)
                kind = error if isinstance(error, StoreFault | Conflict) else _classify(error)
                if isinstance(kind, Conflict) and attempt < CONFLICT_RETRIES:
                    log.debug("transaction lost a conflict (%s); running it again", kind)
                    time.sleep(0.01 * (attempt + 1))  # a worker thread, not the trio loop
                    continue
                if isinstance(kind, StoreFault | Conflict) and kind is not error:
                    raise kind from error
                raise
        raise AssertionError("unreachable")

    def _usable(self, which: str) -> psycopg.Connection[Any]:
        """The named connection, reconnected if it broke."""
        conn: psycopg.Connection[Any] | None = getattr(self, which)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            try:
                conn = self._connect()
            except psycopg.Error as error:
                kind = _classify(error)
                raise (kind if isinstance(kind, StoreFault) else StoreFault(str(error))) from error
            setattr(self, which, conn)
        return conn

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken:
            return
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")

    def read(self, body: Callable[[Tx], T]) -> T:
        assert self._pool is not None, "backend not open"
        try:
            with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                return body(Tx(conn, DIALECT))
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as error:
            kind = _classify(error)
            raise (kind if isinstance(kind, StoreFault) else StoreFault(str(error))) from error

    def recover(self) -> None:
        """Reconnect the writer if its connection broke; a failure is still a ``StoreFault``."""
        self._usable("_writer")

    def wants_maintenance(self) -> bool:
        return False

    def maintain(self) -> None:
        """Nothing: PostgreSQL's autovacuum and checkpointer do the housekeeping."""


class Listener:
    """A connection that only listens; the caller waits for ``fileno`` to be readable, then
    ``drain``s, so no thread sits blocked on it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def fileno(self) -> int:
        return int(self._conn.pgconn.socket)

    def drain(self) -> list[tuple[str, str, list[str]]]:
        """(channel, origin node, items) of every notification received; ``StoreFault`` once the
        connection is gone (notifications sent meanwhile are lost: the caller catches up)."""
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as error:
            raise StoreFault(f"the notification connection broke: {error}") from error
        received: list[tuple[str, str, list[str]]] = []
        while (note := pgconn.notifies()) is not None:
            origin, _, rest = note.extra.decode().partition("\n")
            received.append((note.relname.decode(), origin, rest.split("\n") if rest else []))
        return received

    def close(self) -> None:
        self._conn.close()
