"""The single writer: every change to the database goes through here, in batched transactions.

Concurrent callers' operations are gathered into one transaction (group commit), so the cost of
a commit is shared by everyone who arrived while the previous one ran. Each operation runs in
its own savepoint: one that fails is rolled back and reported to its caller alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import sqlite_utils
import trio

log = logging.getLogger("hookd.store")

T = TypeVar("T")
WriteFn = Callable[[sqlite_utils.Database], T]


class _Op(Generic[T]):
    __slots__ = ("after", "done", "error", "fn", "on_commit", "result")

    def __init__(
        self,
        fn: WriteFn[T],
        wait: bool,
        on_commit: Callable[[T], None] | None = None,
        after: Callable[[bool], None] | None = None,
    ) -> None:
        self.fn = fn
        self.on_commit = on_commit
        self.after = after
        self.done: trio.Event | None = trio.Event() if wait else None
        self.result: T | None = None
        self.error: BaseException | None = None


class Writer:
    """Owns the writing connection. Start ``run`` in a nursery, then ``execute`` or ``submit``."""

    def __init__(self, db: sqlite_utils.Database, *, max_batch: int = 2000, queue_size: int = 20000) -> None:
        self._db = db
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[_Op[Any]](queue_size)

    async def execute(self, fn: WriteFn[T], on_commit: Callable[[T], None] | None = None) -> T:
        """Run ``fn`` in the next transaction and return its result once committed.

        ``on_commit`` runs in the writer task right after the commit, before any other task can
        observe the result: the place to hand new deliveries to the actors without a race.
        """
        op: _Op[T] = _Op(fn, wait=True, on_commit=on_commit)
        await self._send.send(op)
        assert op.done is not None
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def submit(self, fn: WriteFn[Any], after: Callable[[bool], None] | None = None) -> None:
        """Queue ``fn`` without waiting for the commit; blocks only while the queue is full.

        ``after`` runs in the writer task once the transaction is over, with whether ``fn``'s
        change was committed.
        """
        await self._send.send(_Op(fn, wait=False, after=after))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await trio.to_thread.run_sync(self._commit, batch)
            for op in batch:
                if op.on_commit is not None and op.error is None:
                    try:
                        op.on_commit(op.result)
                    except Exception as error:  # the commit stands; report to the caller
                        op.error = error
                if op.done is not None:
                    op.done.set()  # the caller gets the error, if any
                elif op.error is not None:
                    log.error("background write failed: %r", op.error)
                if op.after is not None:
                    op.after(op.error is None)

    def _commit(self, batch: list[_Op[Any]]) -> None:
        conn = self._db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(self._db)
                except Exception as error:  # reported to this op's caller alone
                    conn.execute("ROLLBACK TO op")
                    op.error = error
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in batch:
                op.result = None
                op.error = error


class Readers:
    """A few read-only connections used from trio worker threads, so reads never wait on writes."""

    def __init__(self, connections: list[sqlite_utils.Database]) -> None:
        self._free = list(connections)
        self._limiter = trio.CapacityLimiter(len(connections))

    async def run(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``fn`` with a connection of its own in a worker thread."""
        async with self._limiter:
            db = self._free.pop()
            try:
                return await trio.to_thread.run_sync(fn, db)
            finally:
                self._free.append(db)

    def close(self) -> None:
        for db in self._free:
            db.conn.close()
