"""The process: an asyncio loop serving gRPC, with the trio engine running as its guest.

Shutdown on SIGINT / SIGTERM is ordered: stop accepting calls and let running ones finish (a
grace period), then cancel the engine. Every acknowledged event is already on disk; requests in
flight are abandoned and sent again after the restart (at least once, as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from pathlib import Path
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
from hookd.server.startup import CannotServe, bind, check_address, listen, startup_failure, tls_credentials
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
                    try:
                        bound = await nursery.start(serve_metrics, engine, host or "127.0.0.1", int(port), guard)
                    except OSError as error:
                        reason = f"{error.strerror or error}"
                        raise CannotServe(
                            f"cannot listen on {config.metrics_listen} (--metrics-listen): {reason}"
                        ) from error
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
        # trio's next tick, scheduled from a tick on this thread: a plain call_soon. The
        # thread-safe one would also write to the loop's self-pipe (and the loop read it back)
        # every time, a few times per delivery.
        run_sync_soon_not_threadsafe=loop.call_soon,
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


async def _serve_http(
    config: ServerConfig,
    servicer: WebhookServicer,
    sock: socket.socket,
    stop: asyncio.Event,
    auth: tuple[TokenCheck, FailureLog] | None,
) -> None:
    """The dashboard and the Connect API, on this loop, through the same servicer as gRPC."""
    # Imported only when asked for: the HTTP stack (hypercorn, connectrpc) costs a server that
    # does not serve HTTP half a second at start and some 10 MB.
    from hookd.server import web
    from hookd.server.connect_api import connect_application

    host, port = sock.getsockname()[:2]
    app = web.Router(
        connect_application(servicer, auth, stop),
        web.StaticFiles(web.load_assets()),
        open_access=not config.auth_tokens,
    )
    tls = (config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    log.info("serving http address=%s:%d tls=%s", host, port, tls is not None)
    await web.serve_http(app, sock, stop, tls=tls, grace_s=config.shutdown_grace_s)


def _freeze_startup_heap() -> None:
    """Take what start-up made (imported modules, the engine's loaded state) out of the cyclic
    collector's view. A full collection walks every object it tracks; over the start-up heap it
    took 12-16 ms, on the event loop's thread, every 10-20 s under load: a pause that every
    destination's deliveries felt.

    The cost is bounded and paid once: frozen objects are still freed by reference counting,
    but a cycle that holds one of them (a start-up task or actor that later ends inside a
    reference cycle) is never collected. The HTTP stack, imported when the dashboard's server
    starts just after this, is not frozen."""
    gc.collect()
    gc.freeze()


def _check_port_file(path: Path | None) -> None:
    """``CannotServe`` unless the port files can be written where ``--port-file`` says: they are
    written once hookd serves, too late to stop the start with one clear line."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise CannotServe(f"--port-file {path}: {folder} is not an existing folder")
    if path.is_dir():
        raise CannotServe(f"--port-file {path}: is a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CannotServe(f"--port-file {path}: cannot write in {folder}")


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGINT / SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    check, failures = TokenCheck(config.auth_tokens), FailureLog()
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
    # Listen first: a port in use, a bad TLS file or port file stops the start before the engine runs.
    _check_port_file(config.port_file)
    credentials = tls_credentials(config.tls_cert, config.tls_key)
    port = listen(server, config.listen, credentials)
    if config.metrics_listen:
        check_address(config.metrics_listen, "--metrics-listen")
    http_socket = bind(config.http_listen) if config.http_listen else None

    side, finished, ready = _start_trio(loop, config, MetricsGuard(check, failures) if config.auth_tokens else None)
    try:
        await ready
    except RuntimeError:
        result = await finished
        failure = startup_failure(result.error) if isinstance(result, outcome.Error) else None
        if failure is not None:
            raise failure from None
        result.unwrap()
        raise
    assert side.engine is not None and side.bridge is not None

    watchers = Watchers(config.max_watchers, config.watcher_send_timeout_s)
    servicer = WebhookServicer(side.engine, side.bridge, watchers)
    add_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
        pool=DocumentedPool(),  # type: ignore[arg-type]
    )
    watchers.local_port = port
    await server.start()
    await _report_store(side.engine, health_servicer, loop)
    host = config.listen.rsplit(":", 1)[0]
    side.engine.set_address(f"{host}:{port}")
    log.info("serving address=%s:%d tls=%s auth=%s", host, port, credentials is not None, bool(config.auth_tokens))
    _freeze_startup_heap()
    http_stop = asyncio.Event()
    http_server = None
    if http_socket is not None:
        auth = (check, failures) if config.auth_tokens else None
        http_server = asyncio.ensure_future(_serve_http(config, servicer, http_socket, http_stop, auth))
    if config.port_file is not None:
        if http_socket is not None:  # before the gRPC port's file, which tells that hookd is up
            http_port = http_socket.getsockname()[1]
            config.port_file.with_name(config.port_file.name + ".http").write_text(str(http_port))
        config.port_file.write_text(str(port))

    finished_or_stop = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished_or_stop, finished], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down grace_s=%g", config.shutdown_grace_s)
    await health_servicer.enter_graceful_shutdown()
    http_stop.set()
    await server.stop(config.shutdown_grace_s)
    if http_server is not None:
        await http_server
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
