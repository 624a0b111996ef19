"""The process: an asyncio loop serving gRPC, with the trio engine running as its guest.

Shutdown on SIGINT / SIGTERM is ordered: stop accepting calls and let running ones finish (a
grace period), then cancel the engine. Every acknowledged event is already on disk; requests in
flight are abandoned and sent again after the restart (at least once, as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import grpc
import outcome
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from hookd.engine import Engine, StoreStatus
from hookd.server.auth import FailureLog, TokenAuthInterceptor, TokenCheck
from hookd.server.bridge import TrioBridge
from hookd.server.config import MAX_MESSAGE_BYTES, ServerConfig
from hookd.server.metrics import MetricsGuard, serve_metrics
from hookd.server.reflection import DocumentedPool
from hookd.server.servicer import WebhookServicer, add_to_server
from hookd.server.watchers import Watchers
from hookd.v1 import hookd_pb2

log = logging.getLogger("hookd.server")

SERVICE_NAME = hookd_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name


class _TrioSide:
    """What the trio guest hands back to asyncio once the engine is up."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.bridge: TrioBridge | None = None
        self.cancel_scope: trio.CancelScope | None = None
        self.token: trio.lowlevel.TrioToken | None = None


def _start_trio(
    loop: asyncio.AbstractEventLoop, config: ServerConfig, guard: MetricsGuard | None
) -> tuple[_TrioSide, asyncio.Future[Any], asyncio.Future[None]]:
    side = _TrioSide()
    ready: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[Any] = loop.create_future()

    async def trio_main() -> None:
        engine = Engine(config.engine)
        side.token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                side.cancel_scope = nursery.cancel_scope
                await nursery.start(engine.run)
                if config.metrics_listen:
                    host, _, port = config.metrics_listen.rpartition(":")
                    bound = await nursery.start(serve_metrics, engine, host or "127.0.0.1", int(port), guard)
                    if config.port_file is not None:
                        config.port_file.with_name(config.port_file.name + ".metrics").write_text(str(bound))
                side.engine = engine
                side.bridge = TrioBridge(loop, nursery)
                ready.set_result(None)
        except BaseException as error:
            if not ready.done():
                ready.set_exception(RuntimeError(f"engine failed to start: {error!r}"))
            raise

    def done(result: outcome.Outcome[None]) -> None:
        if not finished.done():
            finished.set_result(result)
        if not ready.done():
            ready.set_exception(RuntimeError("engine stopped before it started"))

    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=done,
        host_uses_signal_set_wakeup_fd=True,
    )
    return side, finished, ready


async def _report_store(engine: Engine, health: Any, loop: asyncio.AbstractEventLoop) -> None:
    """SERVING while the store takes writes, NOT_SERVING while it cannot (a full disk, say)."""

    def status_of(available: bool) -> Any:
        return health_pb2.HealthCheckResponse.SERVING if available else health_pb2.HealthCheckResponse.NOT_SERVING

    async def publish(available: bool) -> None:
        for name in ("", SERVICE_NAME):
            await health.set(name, status_of(available))

    await publish(engine.store_status.available)
    pending: set[asyncio.Task[None]] = set()

    def changed(status: StoreStatus) -> None:  # called in the trio guest, on this same thread and loop
        task = loop.create_task(publish(status.available))
        pending.add(task)
        task.add_done_callback(pending.discard)

    engine.add_store_listener(changed)


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise SystemExit("--tls-cert and --tls-key go together")
    return grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGINT / SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    check, failures = TokenCheck(config.auth_tokens), FailureLog()
    side, finished, ready = _start_trio(loop, config, MetricsGuard(check, failures) if config.auth_tokens else None)
    try:
        await ready
    except RuntimeError:
        (await finished).unwrap()
        raise
    assert side.engine is not None and side.bridge is not None

    interceptors = []
    if config.auth_tokens:
        interceptors.append(
            TokenAuthInterceptor(
                check, failures, open_health=config.open_health, open_reflection=config.open_reflection
            )
        )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    watchers = Watchers(config.max_watchers, config.watcher_send_timeout_s)
    add_to_server(WebhookServicer(side.engine, side.bridge, watchers), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
        pool=DocumentedPool(),  # type: ignore[arg-type]
    )
    credentials = _credentials(config)
    if credentials is None:
        port = server.add_insecure_port(config.listen)
    else:
        port = server.add_secure_port(config.listen, credentials)
    if port == 0:
        raise SystemExit(f"could not listen on {config.listen}")
    watchers.local_port = port
    await server.start()
    await _report_store(side.engine, health_servicer, loop)
    host = config.listen.rsplit(":", 1)[0]
    side.engine.set_address(f"{host}:{port}")
    log.info("serving address=%s:%d tls=%s auth=%s", host, port, credentials is not None, bool(config.auth_tokens))
    if config.port_file is not None:
        config.port_file.write_text(str(port))

    finished_or_stop = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished_or_stop, finished], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down grace_s=%g", config.shutdown_grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.shutdown_grace_s)
    if not finished.done():
        # In a cluster, the others take this node's destinations over now, not after its lease.
        with contextlib.suppress(Exception):
            await side.bridge.call(side.engine.leave, config.shutdown_grace_s)
    if side.token is not None and side.cancel_scope is not None and not finished.done():
        side.token.run_sync_soon(side.cancel_scope.cancel)
    result = await finished
    finished_or_stop.cancel()
    log.info("stopped")
    with contextlib.suppress(trio.Cancelled):
        result.unwrap()
