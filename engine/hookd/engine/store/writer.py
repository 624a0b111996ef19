"""The single writer: every change to the database goes through here, in batched transactions.

Concurrent callers' operations are gathered into one transaction (group commit), so the cost of
a commit is shared by everyone who arrived while the previous one ran. An operation that fails
is rolled back and reported to its caller alone (``partial_batch``).

When the database cannot be written (a full disk, a lost connection, a removed file), nothing
is dropped and nothing is pretended:
- callers waiting for a commit (publishes, API changes) get ``Unavailable`` at once, so nothing
  is acknowledged that is not stored;
- background writes (attempt outcomes) are held and retried, in order, with backoff, until they
  commit. Their deliveries keep their actors' request slots meanwhile, so no destination is sent
  a delivery again because its outcome could not be written;
- ``status`` says so, and listeners hear of every change, until a retry (or a probe write, when
  nothing is held) commits again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import outcome
import trio

from hookd.engine.errors import Unavailable
from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Conflict, StoreFault, Tx

log = logging.getLogger("hookd.store")

T = TypeVar("T")
WriteFn = Callable[[Tx], T]

#: First and longest pause between retries while the store cannot be written.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
#: A batch this small (in rows written, roughly) with a caller waiting on it is committed on the
#: trio thread itself where the backend allows it (SQLite: a small commit takes microseconds,
#: less than the hop to a worker thread and back, which the caller would wait out). Anything
#: larger, and background writes (attempt outcomes) of any size, go to a worker thread: no caller
#: waits on them, the loop goes on sending meanwhile (SQLite releases the GIL while it works),
#: and the outcomes that arrive during the commit make the next batch larger. Measured on one
#: destination at full speed: 5-10 % more deliveries per second, and less CPU per delivery.
INLINE_COST = 256
#: Default cost of an operation that does not say: large, so it never runs inline.
UNKNOWN_COST = INLINE_COST + 1
#: The backend's housekeeping (SQLite: a WAL checkpoint) runs at least this often while there
#: are commits, and sooner when the backend asks (the WAL outgrew its limit).
MAINTAIN_S = 1.0


@dataclass(frozen=True)
class StoreStatus:
    """Whether the store takes writes; ``reason`` and ``since`` (epoch seconds) when it does not."""

    available: bool = True
    reason: str = ""
    since: float = 0.0


@dataclass(frozen=True)
class WriterStatistics:
    """The writer's state, as tests and health read it."""

    commits: int
    queued: int
    held: int
    status: StoreStatus


#: How a caller that does not wait in a task hears of its write: the result, or the error.
Reply = Callable[[outcome.Outcome[T]], None]
#: Background writes that consecutive ops of a batch make together: ``write_many(tx, items)``
#: does for all of ``items`` what each op's own ``fn`` does for its one.
WriteMany = Callable[[Tx, list[Any]], None]


@dataclass(frozen=True)
class FollowUp:
    """A background write that a committed write asks for (``Writer.execute``'s ``then``):
    queued by the writer itself as the first commits, so it is made whatever becomes of the
    first one's caller, and committed before anything queued after."""

    fn: WriteFn[Any]
    first: WriteFn[None] | None = None
    on_commit: Callable[[Any], None] | None = None


class _Op(Generic[T]):
    """One write. A caller waits on it through ``done`` (a task) or ``reply`` (a callback), or
    neither (a background write, which is held and retried while the store cannot write)."""

    __slots__ = ("after", "cost", "done", "error", "first", "fn", "merge", "on_commit", "reply", "result", "then")

    def __init__(
        self,
        fn: WriteFn[T],
        wait: bool,
        on_commit: Callable[[T], None] | None = None,
        after: Callable[[bool], None] | None = None,
        cost: int = UNKNOWN_COST,
        reply: Reply[T] | None = None,
        merge: tuple[WriteMany, Any] | None = None,
        first: WriteFn[None] | None = None,
        then: Callable[[T], list[FollowUp]] | None = None,
    ) -> None:
        self.fn = fn
        self.merge = merge
        self.first = first
        self.then = then
        self.cost = cost
        self.on_commit = on_commit
        self.after = after
        self.done: trio.Event | None = trio.Event() if wait else None
        self.reply = reply
        self.result: T | None = None
        self.error: BaseException | None = None

    @property
    def awaited(self) -> bool:
        return self.done is not None or self.reply is not None

    def settle(self) -> None:
        """Tell the waiting caller, if any, that the op is over (``error`` says how)."""
        if self.done is not None:
            self.done.set()
        if self.reply is not None:
            result = outcome.Error(self.error) if self.error is not None else outcome.Value(cast(T, self.result))
            try:
                self.reply(result)
            except Exception:  # the caller's bug must not stop the writer or the rest of the batch
                log.exception("a write's reply failed")


def _probe(tx: Tx) -> None:
    """A write that needs the disk, to learn whether the store takes writes again."""
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [str(time.time())],
    )


class Writer:
    """Owns the writing connection. Start ``run`` in a nursery, then ``execute`` or ``submit``."""

    def __init__(self, backend: Backend, *, max_batch: int = 2000, queue_size: int = 20000) -> None:
        self._backend = backend
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[_Op[Any]](queue_size)
        self._held: list[_Op[Any]] = []
        self._status = StoreStatus()
        self._listeners: list[Callable[[StoreStatus], None]] = []
        self._recovered = trio.Event()
        self._recovered.set()
        self.commits = 0
        self._maintained_at = 0.0
        #: The writer's own worker thread: its commits never wait behind trio's shared pool
        #: (host name lookups, reads), and only one of them ever runs at a time.
        self._thread = trio.CapacityLimiter(1)
        #: The last commit lost to conflicts: the next turn goes to what is queued.
        self._conflicted = False

    # -- status ------------------------------------------------------------------------------------

    @property
    def status(self) -> StoreStatus:
        return self._status

    def statistics(self) -> WriterStatistics:
        queued = self._receive.statistics().current_buffer_used
        return WriterStatistics(self.commits, queued, len(self._held), self._status)

    def __repr__(self) -> str:
        stats = self.statistics()
        state = "available" if stats.status.available else f"unavailable ({stats.status.reason})"
        return f"<Writer {state} commits={stats.commits} queued={stats.queued} held={stats.held}>"

    def add_status_listener(self, listener: Callable[[StoreStatus], None]) -> None:
        """Called in the writer's task whenever the store becomes unavailable or available again."""
        self._listeners.append(listener)

    async def wait_available(self) -> None:
        """Return once the store takes writes (at once when it does)."""
        await self._recovered.wait()

    def _unavailable_error(self) -> Unavailable:
        return Unavailable(f"the store cannot write: {self._status.reason}; nothing was stored, retry later")

    def _set_status(self, status: StoreStatus) -> None:
        if status.available == self._status.available and status.reason == self._status.reason:
            return
        self._status = status
        if status.available:
            log.warning("store available again")
            self._recovered.set()
        else:
            log.error("store unavailable reason=%s; holding deliveries and refusing publishes", status.reason)
            if self._recovered.is_set():
                self._recovered = trio.Event()
        for listener in self._listeners:
            listener(status)

    # -- entry points ----------------------------------------------------------------------------

    async def execute(
        self,
        fn: WriteFn[T],
        on_commit: Callable[[T], None] | None = None,
        *,
        cost: int = UNKNOWN_COST,
        first: WriteFn[None] | None = None,
        then: Callable[[T], list[FollowUp]] | None = None,
    ) -> T:
        """Run ``fn`` in the next transaction and return its result once committed.

        ``on_commit`` runs in the writer task right after the commit, before any other task can
        observe the result: the place to hand new deliveries to the actors without a race.
        ``cost`` is about how many rows ``fn`` writes (small batches commit inline). ``fn`` may
        run twice in its transaction (``partial_batch``): it must act through ``tx`` alone.
        ``first`` runs at the start of the transaction, before any op of the batch (once however
        many ops bring it): a lock taken there is never waited for while the transaction
        already holds others, so it cannot close a deadlock with another node's transaction.
        ``then`` runs in the writer task right after the commit too, and the writes it returns
        are queued there (``FollowUp``): a caller cancelled meanwhile cannot lose them.
        Raises ``Unavailable`` when the store cannot write (then nothing of ``fn`` is stored).
        """
        if not self._status.available:
            raise self._unavailable_error()
        op: _Op[T] = _Op(fn, wait=True, on_commit=on_commit, cost=cost, first=first, then=then)
        await self._send.send(op)
        assert op.done is not None
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def submit(
        self,
        fn: WriteFn[Any],
        after: Callable[[bool], None] | None = None,
        *,
        cost: int = UNKNOWN_COST,
        merge: tuple[WriteMany, Any] | None = None,
    ) -> None:
        """Queue ``fn`` without waiting for the commit; blocks only while the queue is full.

        ``after`` runs in the writer task once ``fn``'s change is committed (True), or once ``fn``
        itself failed (False). A store fault is neither: the write is held and tried again.
        ``merge``, ``(write_many, item)``, lets ops next to each other in a batch with the same
        ``write_many`` be written by one call of it instead of each by its ``fn``.
        Like every op, ``fn`` may run twice in its transaction (``partial_batch``): it must act
        through ``tx`` alone.
        """
        await self._send.send(_Op(fn, wait=False, after=after, cost=cost, merge=merge))

    def execute_soon(
        self, fn: WriteFn[T], reply: Reply[T], on_commit: Callable[[T], None] | None = None, *, cost: int = UNKNOWN_COST
    ) -> bool:
        """``execute`` for a caller that is not a task: queue ``fn`` and return at once;
        ``reply`` hears, from the writer's task, the result once committed, or the error (at
        once, before this returns, when the store cannot write).

        Returns False, and queues nothing, while the queue is full: the caller then waits in a
        task (``execute``), so that a full queue slows callers down rather than refusing them.
        """
        if not self._status.available:
            reply(outcome.Error(self._unavailable_error()))
            return True
        try:
            self._send.send_nowait(_Op(fn, wait=False, on_commit=on_commit, cost=cost, reply=reply))
        except trio.WouldBlock:
            return False
        return True

    # -- the writer's task -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = RETRY_FIRST_S
        try:
            while True:
                if not self._status.available:
                    await self._wait_while_unavailable(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    await self._retry()
                elif self._held:
                    # Background writes held through a fault or a conflict, all of them, before
                    # anything newer: their deliveries keep request slots until they commit.
                    if not await self._queued_first_after_conflict() and await self._commit_held():
                        backoff = RETRY_FIRST_S
                else:
                    batch = [await self._receive.receive()]
                    self._gather(batch)
                    if await self._commit(batch):
                        backoff = RETRY_FIRST_S
        finally:
            self._answer_queued()

    def _answer_queued(self) -> None:
        """The writer is ending (the engine stops): callers still queued hear that their write
        was not made, rather than waiting for ever. Background writes are sent again after the
        restart, as after a crash."""
        while True:
            try:
                op = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if op.awaited:
                op.result, op.error = None, Unavailable("the service is stopping; nothing was stored, retry")
                op.settle()

    def _gather(self, batch: list[_Op[Any]]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return

    async def _commit(self, batch: list[_Op[Any]]) -> bool:
        """Commit ``batch``; on a store fault, or a conflict that outlasted the backend's own
        retries, hold its background writes and fail the rest."""
        try:
            if self._inline(batch):
                self._backend.write(partial_batch(batch))
            else:
                # Shielded: a batch taken from the queue is committed even as the engine stops
                # (a commit in a thread cannot be abandoned anyway, only refused before it starts).
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._backend.write, partial_batch(batch), limiter=self._thread)
        except StoreFault as fault:
            self._set_status(StoreStatus(False, fault.reason, time.time()))
            self._refuse_or_hold(batch, self._unavailable_error())
            return False
        except Conflict as conflict:
            # Lost to other nodes' transactions again and again (PostgreSQL): the store is fine.
            # Callers hear it at once and may retry; background writes are held and go first
            # after a pause. Left to propagate, it ended the writer and the engine with it.
            log.warning("a write lost repeated conflicts with other nodes' writes (%s); holding it", conflict)
            self._refuse_or_hold(
                batch, Unavailable(f"the write conflicted with other nodes' writes ({conflict}); retry")
            )
            self._conflicted = True
            await trio.sleep(RETRY_FIRST_S)
            return False
        self.commits += 1
        self._set_status(StoreStatus())
        self._finish(batch)
        await self._maintain()
        return True

    def _inline(self, batch: list[_Op[Any]]) -> bool:
        return (
            self._backend.inline_writes
            and any(op.awaited for op in batch)
            and sum(op.cost for op in batch) <= INLINE_COST
        )

    async def _maintain(self) -> None:
        """The backend's housekeeping (SQLite: a WAL checkpoint) when it asks for it, on the
        writer's connection between two commits, in a worker thread: the loop never waits."""
        now = trio.current_time()
        if not self._backend.wants_maintenance() and now - self._maintained_at < MAINTAIN_S:
            return
        self._maintained_at = now
        try:
            await trio.to_thread.run_sync(self._backend.maintain, limiter=self._thread)
        except StoreFault as fault:  # the next commit meets it too, and is handled there
            log.warning("store housekeeping failed reason=%s", fault.reason)

    def _refuse_or_hold(self, batch: list[_Op[Any]], error: Unavailable) -> None:
        for op in batch:
            op.result, op.error = None, None
            if op.awaited:
                op.error = error
                op.settle()
            else:
                self._held.append(op)

    async def _wait_while_unavailable(self, seconds: float) -> None:
        """Pause before the next retry, refusing waiting callers and holding background writes."""
        with trio.move_on_after(seconds):
            while True:
                op = await self._receive.receive()
                self._refuse_or_hold([op], self._unavailable_error())

    async def _retry(self) -> None:
        try:
            await trio.to_thread.run_sync(self._backend.recover, limiter=self._thread)
        except StoreFault as fault:
            self._set_status(StoreStatus(False, fault.reason, self._status.since))
            return
        if not self._held:
            probe: _Op[None] = _Op(_probe, wait=False)
            await self._commit([probe])
            return
        await self._commit_held()  # the rest, if any, follows once the store is available

    async def _queued_first_after_conflict(self) -> bool:
        """After a conflict, commit one batch of what is queued (if anything) before the held
        writes are tried again: should their conflict recur, callers are still answered rather
        than kept waiting behind them. Returns whether it did."""
        if not self._conflicted:
            return False
        self._conflicted = False
        batch: list[_Op[Any]] = []
        self._gather(batch)
        if batch:
            await self._commit(batch)
        return bool(batch)

    async def _commit_held(self) -> bool:
        """Commit the oldest held background writes, at most a batch of them."""
        batch, rest = self._held[: self._max_batch], self._held[self._max_batch :]
        self._held = []
        committed = await self._commit(batch)  # a failure holds the batch again, so it stays in front
        self._held.extend(rest)
        return committed

    def _finish(self, batch: list[_Op[Any]]) -> None:
        for op in batch:
            if op.then is not None and op.error is None:
                try:
                    follow_ups = op.then(op.result)
                except Exception:  # the commit stands, and so does the caller's answer
                    log.exception("a write's follow-up writes could not be made")
                    follow_ups = []
                # Held writes go before anything queued after, and are retried through faults.
                self._held.extend(_Op(f.fn, wait=False, on_commit=f.on_commit, first=f.first) for f in follow_ups)
            if op.on_commit is not None and op.error is None:
                try:
                    op.on_commit(op.result)
                except Exception as error:  # the commit stands; report to the caller
                    op.error = error
            if op.awaited:
                op.settle()  # the caller gets the error, if any
            elif op.error is not None:
                log.error("background write failed: %r", op.error)
            if op.after is not None:
                op.after(op.error is None)


def partial_batch(batch: list[_Op[Any]]) -> Callable[[Tx], None]:
    """The transaction body for ``batch``: an op that fails is rolled back and reported to its
    caller alone, the others commit.

    Ops almost never fail, so the batch first runs whole under one savepoint, with neighbours
    that can be merged (``Writer.submit``) written together; only if an op raises is all of it
    undone and the batch run again op by op, each by its own ``fn`` in a savepoint of its own
    (ops are written to be run again: PostgreSQL runs a batch again after a conflict). A
    savepoint per op would double the statements of a batch of attempt outcomes, and on
    PostgreSQL a savepoint that writes is a subtransaction, which slows every session once a
    transaction holds more than 64 of them.

    What ops ask to run ``first`` runs before all that, outside the savepoints. A ``StoreFault``
    inside an op is the whole transaction's fault (the disk is full for every op), and a
    ``Conflict`` (a deadlock with another node's transaction) aborts it whole: both propagate,
    and the backend rolls everything back (and runs the batch again on a conflict).
    """

    firsts = list(dict.fromkeys(op.first for op in batch if op.first is not None))

    def body(tx: Tx) -> None:
        for first in firsts:
            first(tx)
        noted_first = dict(tx.memo)  # what the firsts noted (a lock held) outlives the rollback
        tx.execute("SAVEPOINT batch")
        try:
            _run_merged(tx, batch)
        except (StoreFault, Conflict):
            raise
        except Exception as error:  # one op failed: undo the batch and isolate it
            log.debug("a write in a batch of %d failed (%r); running them one by one", len(batch), error)
            tx.execute("ROLLBACK TO batch")
            # What the undone ops queued (deferred writes, notifications, memos of what they
            # read or locked) went with them.
            tx.pending.clear()
            tx.notifications.clear()
            tx.memo = dict(noted_first)
            _run_each_in_a_savepoint(tx, batch)
        tx.execute("RELEASE batch")
        for name, pending in list(tx.pending.items()):
            tx.execute("SAVEPOINT deferred")
            try:
                pending.flush(tx)
            except (StoreFault, Conflict):
                raise
            except Exception:  # a bug here must not cost the batch's attempts and publishes
                log.exception("deferred write %s failed; its figures are lost", name)
                tx.execute("ROLLBACK TO deferred")
            tx.execute("RELEASE deferred")

    return body


def _run_merged(tx: Tx, batch: list[_Op[Any]]) -> None:
    """Every op, in order; a run of neighbours with the same ``write_many`` by one call of it."""
    index = 0
    while index < len(batch):
        op = batch[index]
        if op.merge is None:
            op.result, op.error = op.fn(tx), None
            index += 1
            continue
        write_many, item = op.merge
        items = [item]
        end = index + 1
        while end < len(batch) and (other := batch[end].merge) is not None and other[0] is write_many:
            items.append(other[1])
            end += 1
        write_many(tx, items)
        for each in batch[index:end]:
            each.result, each.error = None, None
        index = end


def _run_each_in_a_savepoint(tx: Tx, batch: list[_Op[Any]]) -> None:
    for op in batch:
        # What an op that fails noted for the rest of the transaction goes with its changes: a
        # memo says a lock is held (cluster_ops.check_fence), and rolling back to the savepoint
        # released it; its notifications announce rows that are no longer there.
        memo = dict(tx.memo)
        notifications = {channel: set(payloads) for channel, payloads in tx.notifications.items()}
        tx.execute("SAVEPOINT op")
        try:
            op.result, op.error = op.fn(tx), None
        except (StoreFault, Conflict):
            raise
        except Exception as error:  # reported to this op's caller alone
            tx.execute("ROLLBACK TO op")
            tx.memo, tx.notifications = memo, notifications
            op.result, op.error = None, error
        tx.execute("RELEASE op")


class Readers:
    """Reads on a few connections in worker threads, so reads never wait on writes."""

    def __init__(self, backend: Backend, count: int) -> None:
        self._backend = backend
        self._limiter = trio.CapacityLimiter(count)

    async def run(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read connection in a worker thread; a store fault is ``Unavailable``.
        The readers' own limiter holds them to their connections, apart from trio's shared pool."""
        try:
            return await trio.to_thread.run_sync(self._backend.read, fn, limiter=self._limiter)
        except StoreFault as fault:
            raise Unavailable(f"the store cannot be read: {fault.reason}; retry later") from fault
