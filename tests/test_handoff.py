"""Handing work to the engine without a trio task per call: the writer's callback replies and
the bridge's gathered hand-offs. In-process and fast, on a real SQLite file; the acceptance tests
publish through the server (test_publish_limits.py, test_store_faults.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio

from hookd.engine.errors import InvalidArgument, Unavailable
from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Conflict, Tx
from hookd.engine.store.writer import INLINE_COST, FollowUp, Writer
from hookd.server.bridge import TrioBridge


def _put(key: str, value: str) -> Any:
    def write(tx: Tx) -> str:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [key, value])
        return value

    return write


def _stored(store: Backend, key: str) -> str | None:
    row = store.read(lambda tx: tx.one("SELECT value FROM meta WHERE key = ?", [key]))
    return None if row is None else str(row[0])


async def test_a_reply_comes_after_the_commit_and_its_hook(store: Backend) -> None:
    writer = Writer(store)
    seen: list[str] = []
    replies: list[outcome.Outcome[str]] = []

    def reply(result: outcome.Outcome[str]) -> None:
        seen.append("reply")
        replies.append(result)
        # The reply is only sent once the write is on disk.
        assert _stored(store, "a") == "1"

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        assert writer.execute_soon(_put("a", "1"), reply, on_commit=lambda value: seen.append(f"commit {value}"))
        while not replies:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert seen == ["commit 1", "reply"]
    assert replies[0].unwrap() == "1"


async def test_a_failing_write_replies_its_error_and_spares_the_batch(store: Backend) -> None:
    writer = Writer(store)
    replies: dict[str, outcome.Outcome[Any]] = {}

    def failing(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('b', 'half')")
        raise InvalidArgument("value", "refused")

    async with trio.open_nursery() as nursery:
        # Both are queued before the writer runs, so they share one transaction.
        writer.execute_soon(failing, lambda result: replies.__setitem__("failing", result))
        writer.execute_soon(_put("c", "kept"), lambda result: replies.__setitem__("kept", result))
        await nursery.start(writer.run)
        while len(replies) < 2:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert writer.commits == 1
    with pytest.raises(InvalidArgument, match="refused"):
        replies["failing"].unwrap()
    assert replies["kept"].unwrap() == "kept"
    assert _stored(store, "b") is None
    assert _stored(store, "c") == "kept"


class _Tally:
    """A deferred write: how many ops of the transaction counted, flushed once at commit."""

    def __init__(self) -> None:
        self.count = 0

    def flush(self, tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('tally', ?)", [str(self.count)])


async def test_after_a_failing_write_the_others_are_stored_once_with_their_deferred_writes(
    store: Backend,
) -> None:
    """A batch runs whole first; when one op fails it is undone and run again op by op. What
    the undone pass queued for the commit (deferred writes) must not be counted twice."""
    writer = Writer(store)
    replies: dict[str, outcome.Outcome[Any]] = {}

    def counted(key: str) -> Any:
        def write(tx: Tx) -> str:
            tx.deferred("tally", _Tally).count += 1
            return str(_put(key, "1")(tx))

        return write

    def failing(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('b', 'half')")
        raise InvalidArgument("value", "refused")

    async with trio.open_nursery() as nursery:
        writer.execute_soon(counted("a"), lambda result: replies.__setitem__("a", result))
        writer.execute_soon(failing, lambda result: replies.__setitem__("failing", result))
        writer.execute_soon(counted("c"), lambda result: replies.__setitem__("c", result))
        await nursery.start(writer.run)
        while len(replies) < 3:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert writer.commits == 1
    assert isinstance(replies["failing"], outcome.Error)
    assert (replies["a"].unwrap(), replies["c"].unwrap()) == ("1", "1")
    assert (_stored(store, "a"), _stored(store, "b"), _stored(store, "c")) == ("1", None, "1")
    assert _stored(store, "tally") == "2"


async def test_a_merged_write_that_fails_is_refused_alone(store: Backend) -> None:
    """Neighbours with the same ``write_many`` are written by one call of it; when that call
    fails, each op is run again by its own ``fn``, and only the one that fails is refused."""
    writer = Writer(store)
    merged_calls: list[list[str]] = []
    committed: dict[str, bool] = {}

    def write_many(tx: Tx, keys: list[str]) -> None:
        merged_calls.append(keys)
        for key in keys:
            write_one(tx, key)

    def write_one(tx: Tx, key: str) -> None:
        _put(key, "1")(tx)
        if key == "bad":
            raise InvalidArgument("value", "refused")

    async with trio.open_nursery() as nursery:
        for key in ("a", "bad", "c"):
            await writer.submit(
                partial(write_one, key=key), partial(committed.__setitem__, key), merge=(write_many, key)
            )
        await nursery.start(writer.run)
        while len(committed) < 3:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert merged_calls == [["a", "bad", "c"]]
    assert committed == {"a": True, "bad": False, "c": True}
    assert writer.commits == 1
    assert (_stored(store, "a"), _stored(store, "bad"), _stored(store, "c")) == ("1", None, "1")


async def test_what_a_failed_write_noted_for_its_transaction_goes_with_it(store: Backend) -> None:
    """Run op by op after a failure, an op that fails takes back its memos (a memo can say a
    lock is held, and rolling back released it) and its notifications; the others' stay."""
    writer = Writer(store)
    seen_by_last: list[tuple[bool, bool, dict[str, set[str]]]] = []
    committed: dict[str, bool] = {}

    def noting(key: str, fail: bool = False) -> Any:
        def write(tx: Tx) -> None:
            tx.memo[key] = True
            tx.notify("channel", key)
            if fail:
                raise InvalidArgument("value", "refused")

        return write

    def last(tx: Tx) -> None:
        seen_by_last.append(("a" in tx.memo, "bad" in tx.memo, {k: set(v) for k, v in tx.notifications.items()}))

    async with trio.open_nursery() as nursery:
        await writer.submit(noting("a"), partial(committed.__setitem__, "a"))
        await writer.submit(noting("bad", fail=True), partial(committed.__setitem__, "bad"))
        await writer.submit(last, partial(committed.__setitem__, "last"))
        await nursery.start(writer.run)
        while len(committed) < 3:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert committed == {"a": True, "bad": False, "last": True}
    # The first pass saw everything; the pass op by op, after the failure, only what stands.
    assert seen_by_last[-1] == (True, False, {"channel": {"a"}})


async def test_a_waiting_callers_small_write_commits_on_the_loop_and_background_writes_in_a_worker(
    store: Backend,
) -> None:
    """A caller waits out the hop to a worker thread, so its small write commits inline; an
    attempt outcome has no caller, and commits beside the loop so that the loop keeps sending."""
    writer = Writer(store)
    committed_in: dict[str, int] = {}

    def noting(key: str) -> Any:
        def write(tx: Tx) -> None:
            committed_in[key] = threading.get_ident()
            _put(key, "1")(tx)

        return write

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        background_done = trio.Event()
        await writer.submit(noting("background"), lambda committed: background_done.set(), cost=3)
        await background_done.wait()
        replies: list[outcome.Outcome[Any]] = []
        assert writer.execute_soon(noting("awaited"), replies.append, cost=3)
        while not replies:
            await trio.sleep(0.01)
        await writer.execute(noting("large"), cost=INLINE_COST + 1)
        nursery.cancel_scope.cancel()
    loop_thread = threading.get_ident()
    assert committed_in["awaited"] == loop_thread
    assert committed_in["background"] != loop_thread
    assert committed_in["large"] != loop_thread


async def test_a_follow_up_is_written_first_even_when_its_caller_is_gone(store: Backend) -> None:
    """A write's follow-ups (``then``) are queued by the writer as it commits: a caller cancelled
    right after the commit, before it could queue anything, does not lose them, and they commit
    before what was queued after (a cluster's catch-up after a webhook change)."""
    writer = Writer(store)
    order: list[str] = []

    def written(key: str) -> Callable[[Tx], str]:
        def write(tx: Tx) -> str:
            order.append(key)
            return str(_put(key, "1")(tx))

        return write

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.CancelScope() as caller:
            await writer.execute(
                written("change"),
                on_commit=lambda _: caller.cancel(),
                then=lambda _: [FollowUp(written("follow-up"))],
            )
        assert caller.cancelled_caught
        await writer.execute(written("next"))
        nursery.cancel_scope.cancel()
    assert order == ["change", "follow-up", "next"]
    assert _stored(store, "follow-up") == "1"


async def test_a_full_queue_takes_nothing_and_says_so(store: Backend) -> None:
    writer = Writer(store, queue_size=1)
    replies: list[outcome.Outcome[Any]] = []
    assert writer.execute_soon(_put("d", "1"), replies.append)
    assert not writer.execute_soon(_put("e", "1"), replies.append)
    assert writer.statistics().queued == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        while not replies:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(replies) == 1
    assert _stored(store, "e") is None


async def test_an_unwritable_store_replies_at_once_and_queues_nothing(store: Backend, tmp_path: Path) -> None:
    writer = Writer(store)
    (tmp_path / "hookd.db").rename(tmp_path / "moved.db")
    replies: list[outcome.Outcome[Any]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with pytest.raises(Unavailable, match="removed"):
            await writer.execute(_put("f", "1"))
        assert writer.execute_soon(_put("g", "1"), replies.append)
        assert len(replies) == 1  # answered before the call returned
        assert writer.statistics().queued == 0
        nursery.cancel_scope.cancel()
    with pytest.raises(Unavailable):
        replies[0].unwrap()


# -- the bridge ----------------------------------------------------------------------------------


async def _with_bridge(body: Any) -> Any:
    """Run ``body(bridge, wake_ups)`` on an asyncio loop with trio as its guest, as the server does."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[TrioBridge, trio.lowlevel.TrioToken]] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    stop: list[trio.CancelScope] = []

    async def trio_main() -> None:
        async with trio.open_nursery() as nursery:
            stop.append(nursery.cancel_scope)
            ready.set_result((TrioBridge(loop, nursery), trio.lowlevel.current_trio_token()))
            await trio.sleep_forever()

    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=lambda result: finished.set_result(None),
        host_uses_signal_set_wakeup_fd=True,
    )
    bridge, token = await ready
    try:
        return await body(bridge, token)
    finally:
        token.run_sync_soon(stop[0].cancel)
        await finished


def test_call_soon_returns_what_trio_replies_and_raises_what_it_fails_with() -> None:
    in_trio: list[bool] = []

    def double(value: int, *, reply: Any) -> None:
        trio.lowlevel.current_task()  # raises outside trio's context
        in_trio.append(True)
        if value < 0:
            raise InvalidArgument("value", "must not be negative")
        reply(outcome.Value(value * 2))

    async def body(bridge: TrioBridge, token: trio.lowlevel.TrioToken) -> None:
        assert await bridge.call_soon(double, 21) == 42
        with pytest.raises(InvalidArgument, match="negative"):
            await bridge.call_soon(double, -1)

    asyncio.run(_with_bridge(body))
    assert in_trio == [True, True]


class _CountingToken:
    """A trio token that counts the wake-ups asked of it."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self.wake_ups = 0

    def run_sync_soon(self, fn: Any, *args: Any) -> None:
        self.wake_ups += 1
        self._token.run_sync_soon(fn, *args)


def test_hand_offs_made_before_trio_runs_share_one_wake_up() -> None:
    started: list[int] = []

    def record(index: int, *, reply: Any) -> None:
        started.append(index)
        reply(outcome.Value(index))

    async def body(bridge: TrioBridge, token: trio.lowlevel.TrioToken) -> tuple[list[int], int]:
        counting = _CountingToken(token)
        bridge._token = counting  # type: ignore[assignment]
        answers: list[int] = await asyncio.gather(*(bridge.call_soon(record, index) for index in range(50)))
        return list(answers), counting.wake_ups

    answers, wake_ups = asyncio.run(_with_bridge(body))
    assert answers == list(range(50))
    assert started == list(range(50))
    assert wake_ups == 1


def test_a_caller_gone_before_trio_runs_starts_nothing() -> None:
    started: list[int] = []

    def record(index: int, *, reply: Any) -> None:
        started.append(index)
        reply(outcome.Value(index))

    async def body(bridge: TrioBridge, token: trio.lowlevel.TrioToken) -> None:
        gone: asyncio.Future[int] = asyncio.ensure_future(bridge.call_soon(record, 1))
        await asyncio.sleep(0)  # the hand-off is made ...
        gone.cancel()  # ... and its caller leaves before trio runs it
        assert await bridge.call_soon(record, 2) == 2
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(_with_bridge(body))
    assert started == [2]


async def test_callers_still_queued_when_the_writer_ends_hear_so(store: Backend) -> None:
    writer = Writer(store)
    replies: list[outcome.Outcome[Any]] = []
    assert writer.execute_soon(_put("j", "1"), replies.append)
    with trio.CancelScope() as scope:
        scope.cancel()  # the engine stops before the writer took the write
        await writer.run()
    assert len(replies) == 1
    with pytest.raises(Unavailable, match="stopping"):
        replies[0].unwrap()
    assert _stored(store, "j") is None


def test_work_call_soon_hands_back_runs_in_a_task_the_caller_cancels() -> None:
    events: list[str] = []

    def needs_a_task(*, reply: Any) -> Any:
        async def slow() -> int:
            events.append("started")
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                events.append("cancelled")
                raise
            return 0

        return slow

    def quick(value: int, *, reply: Any) -> Any:
        async def task() -> int:
            return value + 1

        return task

    async def body(bridge: TrioBridge, token: trio.lowlevel.TrioToken) -> None:
        assert await bridge.call_soon(quick, 41) == 42
        waiting: asyncio.Future[int] = asyncio.ensure_future(bridge.call_soon(needs_a_task))
        while not events:
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        while len(events) < 2:
            await asyncio.sleep(0.01)

    asyncio.run(_with_bridge(body))
    assert events == ["started", "cancelled"]


async def test_writes_held_through_a_fault_all_commit_in_order_once_it_is_over(store: Backend, tmp_path: Path) -> None:
    """More background writes were held than one batch takes: once the store takes writes again,
    every one of them commits, in the order they came, before anything newer (only the first
    batch did, and the rest stayed held, their deliveries keeping request slots, until the next
    fault)."""
    writer = Writer(store, max_batch=3)
    done: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        (tmp_path / "hookd.db").rename(tmp_path / "moved.db")  # a real fault: the file is gone

        def noted(name: str) -> Callable[[bool], None]:
            return lambda ok: done.append(f"{name}:{ok}")

        for n in range(7):
            await writer.submit(_put(f"held{n}", "1"), after=noted(f"held{n}"))
        while writer.statistics().held < 7:
            await trio.sleep(0.01)
        (tmp_path / "moved.db").rename(tmp_path / "hookd.db")
        await writer.wait_available()  # once the first batch of them committed
        await writer.execute(_put("newer", "1"), on_commit=lambda _: done.append("newer"))
        assert done == [f"held{n}:True" for n in range(7)] + ["newer"]
        assert writer.statistics().held == 0 and writer.status.available
        nursery.cancel_scope.cancel()
    assert all(_stored(store, f"held{n}") == "1" for n in range(7))


async def test_a_conflict_that_outlasts_the_retries_is_refused_not_fatal(
    store: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch that loses a deadlock to other nodes' writes more times than the
    backend runs it again raises Conflict. The callers hear UNAVAILABLE (retry), the background
    writes are held and commit after a pause, and the writer goes on (it ended, and the engine
    with it, leaving callers unanswered). Six deadlocks in a row cannot be provoked on purpose:
    the backend's write raising is the one stand-in."""
    writer = Writer(store)
    original = store.write
    conflicts = [Conflict("deadlock detected"), Conflict("deadlock detected")]

    def write(body: Any) -> Any:
        if conflicts:
            raise conflicts.pop()
        return original(body)

    monkeypatch.setattr(store, "write", write)
    done: list[bool] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with pytest.raises(Unavailable, match="conflicted"):
            await writer.execute(_put("caller", "1"), cost=1)
        await writer.submit(_put("background", "1"), after=done.append)  # meets the second conflict
        with trio.fail_after(10):
            while not writer.statistics().held:
                await trio.sleep(0.01)
            await writer.execute(_put("caller", "2"), cost=1)  # the caller's retry goes through
            while not done:
                await trio.sleep(0.01)
        assert done == [True] and writer.status.available
        nursery.cancel_scope.cancel()
    assert (_stored(store, "background"), _stored(store, "caller")) == ("1", "2")


async def test_callers_are_answered_while_held_writes_keep_conflicting(store: Backend) -> None:
    """Held background writes go before anything newer; but should they keep losing conflicts to
    other nodes' writes, a caller queued meanwhile is answered between their tries instead of
    waiting until they stop. The conflicts are the one stand-in: the held write raises them."""
    writer = Writer(store)
    conflicts = [Conflict("deadlock detected")] * 10  # two seconds of tries, 0.2 s apart

    def contested(tx: Tx) -> None:
        if conflicts:
            raise conflicts.pop()
        tx.execute("INSERT INTO meta (key, value) VALUES ('contested', '1')")

    done: list[bool] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.submit(contested, after=done.append)
        while not writer.statistics().held:
            await trio.sleep(0.01)
        with trio.fail_after(10):
            await writer.execute(_put("caller", "1"), cost=1)
        assert conflicts, "the caller waited until the held write stopped conflicting"
        with trio.fail_after(10):
            while not done:
                await trio.sleep(0.05)
        assert done == [True]
        nursery.cancel_scope.cancel()
    assert (_stored(store, "caller"), _stored(store, "contested")) == ("1", "1")
