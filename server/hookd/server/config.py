"""Server settings: every flag has an environment variable, shown in ``hookd serve --help``."""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from hookd.engine.breaker import BreakerPolicy
from hookd.engine.config import EngineConfig, default_node_id
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.retry import RetryPolicy
from hookd.server.watchers import DEFAULT_MAX_WATCHERS, DEFAULT_SEND_TIMEOUT_S

#: Largest gRPC message accepted: a full PublishEvents batch fits, anything bigger is refused.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    engine: EngineConfig = field(default_factory=EngineConfig)
    port_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_tokens: tuple[str, ...] = ()
    open_health: bool = True
    open_reflection: bool = True
    metrics_listen: str = ""
    http_listen: str = ""
    log_level: str = "info"
    shutdown_grace_s: float = 5.0
    max_watchers: int = DEFAULT_MAX_WATCHERS
    watcher_send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds, as seconds; argparse's ``type``."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:], 0.0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use 30d, 12h, 90m, 45s or seconds") from None
    if not (0 <= seconds < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive, finite duration")
    return seconds


def duration_text(seconds: float) -> str:
    """Seconds in the largest unit that says them exactly (``30d``), as ``duration`` reads them."""
    for unit, size in _UNITS.items():
        if seconds and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hookd",
        description="hookd: webhook delivery service (gRPC API, trio delivery engine, SQLite store).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="run the service",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run the gRPC server and the delivery engine. Each flag can also be set with the "
        "environment variable named in its help.",
    )
    s.add_argument(
        "--listen",
        default=_env("HOOKD_LISTEN", "127.0.0.1:50051"),
        help="host:port for gRPC; port 0 picks a free one [HOOKD_LISTEN]",
    )
    s.add_argument(
        "--database",
        default=_env("HOOKD_DATABASE", "var/hookd.db"),
        help="SQLite file, created owner-only if missing, or a postgresql://user@host:port/dbname URL "
        "(cluster mode) [HOOKD_DATABASE]",
    )
    s.add_argument(
        "--synchronous",
        choices=["NORMAL", "FULL"],
        default=_env("HOOKD_SYNCHRONOUS", "NORMAL"),
        help="SQLite durability: NORMAL survives a process crash, FULL also a power cut [HOOKD_SYNCHRONOUS]",
    )
    s.add_argument(
        "--port-file",
        default=_env("HOOKD_PORT_FILE", ""),
        help="write the bound port to this file once serving [HOOKD_PORT_FILE]",
    )
    s.add_argument(
        "--allow-http",
        action="store_true",
        default=_flag(_env("HOOKD_ALLOW_HTTP", "")),
        help="allow plain http destinations (default: https only) [HOOKD_ALLOW_HTTP=1]",
    )
    s.add_argument(
        "--allow-destination",
        action="append",
        default=[e for e in _env("HOOKD_ALLOW_DESTINATIONS", "").split(",") if e],
        help="CIDR, address or host name that destinations may reach although private or "
        "loopback; repeatable [HOOKD_ALLOW_DESTINATIONS, comma-separated]",
    )
    s.add_argument(
        "--destination-ca-file",
        default=_env("HOOKD_DESTINATION_CA_FILE", ""),
        help="PEM file of CA certificates trusted for https destinations, in addition to the system's "
        "[HOOKD_DESTINATION_CA_FILE]",
    )
    s.add_argument(
        "--max-attempts",
        type=int,
        default=int(_env("HOOKD_MAX_ATTEMPTS", "8")),
        help="attempts per delivery before it is marked failed [HOOKD_MAX_ATTEMPTS]",
    )
    s.add_argument(
        "--retry-base",
        type=float,
        default=float(_env("HOOKD_RETRY_BASE", "30")),
        help="seconds: ceiling of the first retry delay, doubled each retry (full jitter) [HOOKD_RETRY_BASE]",
    )
    s.add_argument(
        "--retry-cap",
        type=float,
        default=float(_env("HOOKD_RETRY_CAP", "3600")),
        help="seconds: longest retry delay, Retry-After included [HOOKD_RETRY_CAP]",
    )
    s.add_argument(
        "--breaker-threshold",
        type=int,
        default=int(_env("HOOKD_BREAKER_THRESHOLD", "5")),
        help="consecutive failures that open a destination's breaker [HOOKD_BREAKER_THRESHOLD]",
    )
    s.add_argument(
        "--breaker-cooldown",
        type=float,
        default=float(_env("HOOKD_BREAKER_COOLDOWN", "30")),
        help="seconds an open breaker waits before its probe; doubles per failed probe up to "
        "10 min [HOOKD_BREAKER_COOLDOWN]",
    )
    s.add_argument(
        "--default-rate-limit",
        type=float,
        default=float(_env("HOOKD_DEFAULT_RATE_LIMIT", "1000")),
        help="requests per second per destination when its webhooks set none [HOOKD_DEFAULT_RATE_LIMIT]",
    )
    s.add_argument(
        "--max-in-flight",
        type=int,
        default=int(_env("HOOKD_MAX_IN_FLIGHT", "16")),
        help="concurrent requests per destination [HOOKD_MAX_IN_FLIGHT]",
    )
    s.add_argument(
        "--queue-size",
        type=int,
        default=int(_env("HOOKD_QUEUE_SIZE", "256")),
        help="deliveries each destination holds in memory; the rest wait on disk [HOOKD_QUEUE_SIZE]",
    )
    s.add_argument(
        "--actor-idle",
        type=float,
        default=float(_env("HOOKD_ACTOR_IDLE", "30")),
        help="seconds a destination actor without work keeps its breaker and connections [HOOKD_ACTOR_IDLE]",
    )
    s.add_argument(
        "--secret-grace",
        type=float,
        default=float(_env("HOOKD_SECRET_GRACE", "86400")),
        help="seconds the previous secret keeps signing after a rotation [HOOKD_SECRET_GRACE]",
    )
    s.add_argument(
        "--node-id",
        default=_env("HOOKD_NODE_ID", ""),
        help="this node's id in a cluster (a postgresql:// database); unique among live nodes; "
        "default: host name and a random suffix [HOOKD_NODE_ID]",
    )
    s.add_argument(
        "--lease",
        type=float,
        default=float(_env("HOOKD_LEASE", str(EngineConfig.lease_s))),
        help="seconds a node's ownership of its destinations lasts without renewal: a killed node's "
        "destinations move to the others after this [HOOKD_LEASE]",
    )
    s.add_argument(
        "--retention",
        type=duration,
        metavar="DURATION",
        default=_env("HOOKD_RETENTION", duration_text(EngineConfig.retention_s)),
        help="settled deliveries, their attempts and events no pending or held delivery needs are removed "
        "once this old: 30d, 12h, 90m, 45s or seconds; 0 keeps everything [HOOKD_RETENTION]",
    )
    s.add_argument(
        "--auto-disable-after",
        type=duration,
        metavar="DURATION",
        default=_env("HOOKD_AUTO_DISABLE_AFTER", duration_text(EngineConfig.auto_disable_after_s)),
        help="an active webhook whose every attempt failed for this long becomes inactive (and "
        "webhook.disabled is published); same syntax; 0 never [HOOKD_AUTO_DISABLE_AFTER]",
    )
    s.add_argument(
        "--max-webhooks-per-type",
        type=int,
        default=int(_env("HOOKD_MAX_WEBHOOKS_PER_TYPE", str(EngineConfig.max_webhooks_per_type))),
        help="most webhooks one event type may have; creating more is RESOURCE_EXHAUSTED [HOOKD_MAX_WEBHOOKS_PER_TYPE]",
    )
    s.add_argument(
        "--max-deliveries-per-call",
        type=int,
        default=int(_env("HOOKD_MAX_DELIVERIES_PER_CALL", str(EngineConfig.max_deliveries_per_call))),
        help="most deliveries one publish call may create (events x subscribed webhooks); more is "
        "INVALID_ARGUMENT [HOOKD_MAX_DELIVERIES_PER_CALL]",
    )
    s.add_argument(
        "--tls-cert",
        default=_env("HOOKD_TLS_CERT", ""),
        help="PEM certificate chain: serve gRPC over TLS [HOOKD_TLS_CERT]",
    )
    s.add_argument(
        "--tls-key", default=_env("HOOKD_TLS_KEY", ""), help="PEM private key for --tls-cert [HOOKD_TLS_KEY]"
    )
    s.add_argument(
        "--auth-token",
        action="append",
        default=[t for t in _env("HOOKD_AUTH_TOKENS", "").split(",") if t],
        help="require 'authorization: Bearer <token>' on every call; repeatable [HOOKD_AUTH_TOKENS, comma-separated]",
    )
    s.add_argument(
        "--protect-health",
        action="store_true",
        default=_flag(_env("HOOKD_PROTECT_HEALTH", "")),
        help="with tokens set, require a token for grpc.health.v1 too [HOOKD_PROTECT_HEALTH=1]",
    )
    s.add_argument(
        "--protect-reflection",
        action="store_true",
        default=_flag(_env("HOOKD_PROTECT_REFLECTION", "")),
        help="with tokens set, require a token for server reflection too [HOOKD_PROTECT_REFLECTION=1]",
    )
    s.add_argument(
        "--metrics-listen",
        default=_env("HOOKD_METRICS_LISTEN", ""),
        help="host:port to serve Prometheus metrics at /metrics; off unless set; port 0 picks a free one, "
        "written to <port-file>.metrics [HOOKD_METRICS_LISTEN]",
    )
    s.add_argument(
        "--max-watchers",
        type=int,
        default=int(_env("HOOKD_MAX_WATCHERS", str(DEFAULT_MAX_WATCHERS))),
        help="StreamHealth calls open at once; one more is RESOURCE_EXHAUSTED [HOOKD_MAX_WATCHERS]",
    )
    s.add_argument(
        "--watcher-send-timeout",
        type=float,
        default=float(_env("HOOKD_WATCHER_SEND_TIMEOUT", f"{DEFAULT_SEND_TIMEOUT_S:g}")),
        help="seconds a StreamHealth watcher may take to accept a snapshot before it is dropped "
        "[HOOKD_WATCHER_SEND_TIMEOUT]",
    )
    s.add_argument(
        "--http-listen",
        default=_env("HOOKD_HTTP_LISTEN", ""),
        help="host:port to serve the dashboard and the API over HTTP (Connect, gRPC-Web) for browsers and curl; "
        "off unless set; same tokens and TLS as gRPC; port 0 picks a free one, written to <port-file>.http "
        "[HOOKD_HTTP_LISTEN]",
    )
    s.add_argument(
        "--log-level",
        default=_env("HOOKD_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="[HOOKD_LOG_LEVEL]",
    )
    return p


def _destinations(args: argparse.Namespace) -> DestinationPolicy:
    policy = DestinationPolicy.from_entries(
        args.allow_destination, allow_http=args.allow_http, ca_file=args.destination_ca_file
    )
    try:
        policy.tls_context()  # an unreadable CA file stops the start, not the first delivery
    except (OSError, ssl.SSLError) as error:
        raise SystemExit(f"--destination-ca-file {args.destination_ca_file}: {error}") from error
    return policy


def from_args(args: argparse.Namespace) -> ServerConfig:
    engine = EngineConfig(
        database=args.database,
        synchronous=args.synchronous,
        retry=RetryPolicy(max_attempts=args.max_attempts, base_s=args.retry_base, cap_s=args.retry_cap),
        breaker=BreakerPolicy(failure_threshold=args.breaker_threshold, cooldown_s=args.breaker_cooldown),
        destinations=_destinations(args),
        default_rate_limit=args.default_rate_limit,
        max_in_flight=args.max_in_flight,
        queue_size=args.queue_size,
        actor_idle_s=args.actor_idle,
        secret_grace_s=args.secret_grace,
        max_webhooks_per_type=args.max_webhooks_per_type,
        max_deliveries_per_call=args.max_deliveries_per_call,
        node_id=args.node_id or default_node_id(),
        lease_s=args.lease,
        retention_s=args.retention,
        auto_disable_after_s=args.auto_disable_after,
    )
    return ServerConfig(
        listen=args.listen,
        engine=engine,
        port_file=Path(args.port_file) if args.port_file else None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        auth_tokens=tuple(args.auth_token),
        open_health=not args.protect_health,
        open_reflection=not args.protect_reflection,
        metrics_listen=args.metrics_listen,
        http_listen=args.http_listen,
        log_level=args.log_level,
        max_watchers=args.max_watchers,
        watcher_send_timeout_s=args.watcher_send_timeout,
    )
