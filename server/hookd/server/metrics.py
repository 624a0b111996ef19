"""Prometheus exposition of the health figures, on an opt-in loopback HTTP port.

The figures are the StreamHealth snapshot's, so both views always agree. Names follow the
Prometheus conventions: a ``hookd_`` prefix, base units (seconds, ratios), ``_total`` only on
counters. Windowed figures carry a ``window`` label (5m, 1h, 1d) because the rolling windows are
hookd's own; the counters let PromQL compute any other window.

The endpoint is served by a trio task (h11 parses HTTP), not by prometheus_client's threaded
server, so it lives in the engine's nursery like everything else.

The figures name every destination URL, so when the API asks for bearer tokens, /metrics asks
for one of the same tokens (401 otherwise); Prometheus sends it with ``authorization:
{credentials: ...}`` in its scrape config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import h11
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hookd.engine import Engine, Snapshot, Stats
from hookd.server.auth import FailureLog, TokenCheck

log = logging.getLogger("hookd.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW_LABEL = {300: "5m", 3600: "1h", 86400: "1d"}
QUANTILES = (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"))


class _SnapshotCollector(Collector):
    """Turns one snapshot (and the counters since start) into metric families."""

    def __init__(self, snapshot: Snapshot, totals: dict[tuple[str, str], int]) -> None:
        self._snapshot = snapshot
        self._totals = totals

    def _scoped(self) -> Iterable[tuple[str, Stats]]:
        yield "service", self._snapshot.service
        for stats in self._snapshot.webhooks:
            yield "webhook", stats
        for stats in self._snapshot.destinations:
            yield "destination", stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        attempts_total = CounterMetricFamily(
            "hookd_attempts", "Delivery attempts since the server started.", labels=["destination", "outcome"]
        )
        for (destination, outcome), count in sorted(self._totals.items()):
            attempts_total.add_metric([destination, outcome], count)
        yield attempts_total
        actors = GaugeMetricFamily("hookd_actors", "Destination actors running now.")
        actors.add_metric([], self._snapshot.actors)
        yield actors
        restarts = CounterMetricFamily("hookd_actor_restarts", "Actor restarts after crashes since start.")
        restarts.add_metric([], self._snapshot.actor_restarts)
        yield restarts

        labels = ["scope", "key", "window"]
        window_attempts = GaugeMetricFamily("hookd_window_attempts", "Attempts in the rolling window.", labels=labels)
        success = GaugeMetricFamily(
            "hookd_success_ratio", "Successful attempts / attempts in the window.", labels=labels
        )
        duration = GaugeMetricFamily(
            "hookd_attempt_duration_seconds", "Attempt duration quantiles in the window.", labels=[*labels, "quantile"]
        )
        errors = GaugeMetricFamily(
            "hookd_window_errors", "Failed attempts in the window by outcome.", labels=[*labels, "outcome"]
        )
        live_labels = ["scope", "key"]
        backlog = GaugeMetricFamily("hookd_backlog_deliveries", "Deliveries waiting on disk.", labels=live_labels)
        queued = GaugeMetricFamily("hookd_queued_deliveries", "Deliveries loaded in memory.", labels=live_labels)
        in_flight = GaugeMetricFamily("hookd_in_flight_requests", "Requests in flight.", labels=live_labels)
        retries = GaugeMetricFamily("hookd_retries_scheduled", "Deliveries waiting for a retry.", labels=live_labels)
        last_success = GaugeMetricFamily(
            "hookd_last_success_timestamp_seconds", "Time of the last successful attempt.", labels=live_labels
        )
        last_failure = GaugeMetricFamily(
            "hookd_last_failure_timestamp_seconds", "Time of the last failed attempt.", labels=live_labels
        )
        breaker = GaugeMetricFamily(
            "hookd_breaker_state", "1 for the destination breaker's current state.", labels=["destination", "state"]
        )
        for scope, stats in self._scoped():
            for figures in stats.windows:
                window = [scope, stats.key, WINDOW_LABEL.get(figures.window_s, f"{figures.window_s}s")]
                window_attempts.add_metric(window, figures.attempts)
                if figures.attempts:  # a window without attempts has no ratio and no durations, not 0
                    success.add_metric(window, figures.success_rate)
                    for quantile, field in QUANTILES:
                        duration.add_metric([*window, quantile], getattr(figures, field) / 1000.0)
                for outcome, count in sorted(figures.errors.items()):
                    errors.add_metric([*window, outcome], count)
            key = [scope, stats.key]
            backlog.add_metric(key, stats.backlog)
            queued.add_metric(key, stats.queued_in_memory)
            in_flight.add_metric(key, stats.in_flight)
            retries.add_metric(key, stats.retries_scheduled)
            last_success.add_metric(key, stats.last_success)
            last_failure.add_metric(key, stats.last_failure)
            if scope == "destination" and stats.breaker_state is not None:
                for state in ("CLOSED", "OPEN", "HALF_OPEN"):
                    breaker.add_metric([stats.key, state.lower()], float(stats.breaker_state.value == state))
        yield from (window_attempts, success, duration, errors, backlog, queued, in_flight, retries)
        yield from (last_success, last_failure, breaker)


@dataclass(frozen=True)
class MetricsGuard:
    """The API's tokens, asked of scrapers too, and the log of refused attempts."""

    check: TokenCheck
    failures: FailureLog

    def refused(self, request: h11.Request, peer: str) -> bool:
        """Whether to answer 401; a refusal is logged."""
        authorization = next((value for name, value in request.headers if name == b"authorization"), None)
        reason = self.check.refusal(authorization)
        if reason is not None:
            self.failures.refused("GET /metrics", peer, reason)
        return reason is not None


def _peer(stream: trio.SocketStream) -> str:
    """The scraper's address, written as grpc writes its peers."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown"
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def render(snapshot: Snapshot, totals: dict[tuple[str, str], int]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, totals))
    return generate_latest(registry)


async def _answer(stream: trio.SocketStream, engine: Engine, guard: MetricsGuard | None) -> None:
    connection = h11.Connection(h11.SERVER)
    with trio.move_on_after(10):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                connection.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                break
            return
        headers = [("connection", "close")]
        if event.method != b"GET" or event.target.split(b"?")[0] != b"/metrics":
            status, body, content_type = 404, b"not found; try /metrics\n", "text/plain"
        elif guard is not None and guard.refused(event, _peer(stream)):
            status, body, content_type = 401, b"a bearer token is required\n", "text/plain"
            headers.append(("www-authenticate", 'Bearer realm="hookd"'))
        else:
            snapshot = await engine.health_snapshot()
            status, body, content_type = 200, render(snapshot, engine.attempt_totals()), CONTENT_TYPE
        headers += [("content-type", content_type), ("content-length", str(len(body)))]
        await stream.send_all(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(connection.send(h11.Data(data=body)) or b"")
        await stream.send_all(connection.send(h11.EndOfMessage()) or b"")


async def serve_metrics(
    engine: Engine,
    host: str,
    port: int,
    guard: MetricsGuard | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` until cancelled (behind ``guard``'s tokens if given); reports the bound
    port to ``nursery.start``."""

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _answer(stream, engine, guard)
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            pass
        except Exception:  # one bad scrape must not take the engine down with it
            log.exception("metrics request failed")
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics address=%s:%d", host, bound)
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
