"""Server settings: every flag has an environment variable, shown in ``hookd serve --help``."""

from __future__ import annotations

import argparse
import math
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from hookd.engine.breaker import BreakerPolicy
from hookd.engine.config import EngineConfig, default_node_id
from hookd.engine.core import MAX_GRACE_S
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.retry import RetryPolicy
from hookd.engine.validation import MAX_RATE_LIMIT, MIN_RATE_LIMIT
from hookd.server.watchers import DEFAULT_MAX_WATCHERS, DEFAULT_SEND_TIMEOUT_S

#: Largest gRPC message accepted: a full PublishEvents batch fits, anything bigger is refused.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
#: Largest count a flag takes: far beyond any sensible setting; without a bound, 10**30 would
#: pass, which SQLite cannot even bind as a parameter.
MAX_COUNT = 1_000_000_000
HOUR_S, DAY_S = 3600.0, 86400.0
#: Longest retry delay (``--retry-cap``): 30 days. Anything longer is a slip of the finger (a
#: value in milliseconds, say), and due times stay within what API timestamps can carry.
MAX_RETRY_CAP_S = 30 * DAY_S
#: Longest first cool-down of a breaker: the most it ever waits (``BreakerPolicy.max_cooldown_s``).
MAX_BREAKER_COOLDOWN_S = BreakerPolicy.max_cooldown_s
#: Shortest lease: each node renews every fifth of it, a database round trip each time.
MIN_LEASE_S = 1.0


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


T = TypeVar("T")
N = TypeVar("N")


class EnvText(str):
    """A value read from an environment variable, kept as text: argparse converts and checks
    a string default with the flag's ``type`` just as it does a value given on the command line
    (but only when the flag is not given), and the variable's name lets the error say where the
    bad value came from."""

    variable: str

    def __new__(cls, text: str, variable: str) -> EnvText:
        self = super().__new__(cls, text)
        self.variable = variable
        return self


def _env(name: str, default: str) -> str:
    """The variable's text, marked as such, or ``default`` when it is not set."""
    value = os.environ.get(name)
    return default if value is None else EnvText(value, name)


def _env_list(name: str) -> EnvText:
    """The variable's comma-separated list as text (empty when not set), for a repeatable flag."""
    return EnvText(os.environ.get(name, ""), name)


def _naming_the_variable(convert: Callable[[str], T]) -> Callable[[str], T]:
    """``convert`` as argparse's ``type``, its error also naming the environment variable when
    the text came from one: the operator looks for the mistake there, not on the command line."""

    def checked(text: str) -> T:
        try:
            return convert(text)
        except argparse.ArgumentTypeError as error:
            if isinstance(text, EnvText):
                raise argparse.ArgumentTypeError(f"{error} (set by {text.variable})") from None
            raise

    checked.__name__ = convert.__name__
    return checked


def positive_count(maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """argparse's ``type`` for a number of things: a whole number from 1 (0 would leave hookd
    unable to deliver or to accept anything) to ``maximum``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: from 1 to {maximum:,}")
        return value

    return _naming_the_variable(whole_number)


def _plain(value: float) -> str:
    """A bound as people write it: ``604,800``, ``0.1``, never ``6.048e+05``."""
    return f"{value:,.10g}"


def number_between(
    low: float, high: float, *, low_allowed: bool = False, unit: str = "seconds"
) -> Callable[[str], float]:
    """argparse's ``type`` for a finite number above ``low`` (or from it, with ``low_allowed``)
    and at most ``high``: ``float()`` alone takes ``nan``, ``inf`` and negative numbers, which
    break the engine only later (a division by zero, a loop that never waits)."""
    bounds = (
        f"from {_plain(low)} to {_plain(high)}"
        if low_allowed
        else f"more than {_plain(low)} and at most {_plain(high)}"
    )

    def finite_number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text.strip()} is not a finite number")
        in_range = (low <= value if low_allowed else low < value) and value <= high
        if not in_range:
            raise argparse.ArgumentTypeError(f"{text.strip()} is out of range: {unit}, {bounds}")
        return value

    return _naming_the_variable(finite_number)


def one_of(*allowed: str) -> Callable[[str], str]:
    """argparse's ``type`` that checks ``choices`` itself, in any case, giving the canonical
    spelling: argparse does not check choices against a default, which is where a value from the
    environment is (and there ``full`` or ``INFO`` has always worked)."""
    canonical = {name.lower(): name for name in allowed}

    def choice(text: str) -> str:
        name = canonical.get(text.strip().lower())
        if name is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return name

    return _naming_the_variable(choice)


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


@_naming_the_variable
def entry(text: str) -> Any:
    """argparse's ``type`` for one value of a repeatable flag, stripped, or for the whole
    comma-separated list from its environment variable: the entries of a list. An empty entry
    is refused: ``--auth-token ''`` would turn authentication on with no token that works.
    The error never repeats the text: it may be a token."""
    if isinstance(text, EnvText):
        return [entry(part) for part in str(text).split(",")] if text.strip() else []
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("an empty entry: give each one at least one character other than spaces")
    return value


_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@_naming_the_variable
def switch(text: str) -> bool:
    """argparse's ``type`` for an on/off variable: anything but the usual words is refused, as
    ``HOOKD_PROTECT_HEALTH=enabled`` would otherwise leave health open without a word."""
    value = text.strip().lower()
    if value not in _ON + _OFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(_ON)} (on) or {', '.join(_OFF[1:])} (off)")
    return value in _ON


class _Switch(argparse.Action):
    """``--flag`` turns the setting on; when it is not given, its environment variable, text that
    argparse converts with ``switch``, decides."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, type=switch, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        setattr(namespace, self.dest, True)


class _Entries(argparse.Action):
    """A repeatable flag whose first use on the command line replaces the list from the
    environment instead of adding to it: an operator who leaves a leaked token out of the
    command line must not find it still valid."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        given = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*([] if given is self.default else given), values])


def _shown_default(action: argparse.Action) -> str:
    """A flag's default as help shows it: never a token, nor the database URL's password."""
    default = action.default
    if action.dest == "auth_token":
        return "set, not shown" if str(default).strip() else "none"
    if action.dest == "database" and str(default).startswith(("postgresql://", "postgres://")):
        from hookd.engine.store.postgres import redact  # psycopg only when it is a PostgreSQL URL

        return redact(default)
    if isinstance(action, _Switch):
        try:
            return "on" if switch(default) else "off"
        except argparse.ArgumentTypeError:
            return repr(str(default))  # help still works; the start says what is wrong
    if isinstance(action, _Entries):
        return str(default).strip() or "none"
    return str(default)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, as ``_shown_default`` shows it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.default in (None, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: {_shown_default(action).replace('%', '%%')})"


class _ServeParser(argparse.ArgumentParser):
    """``serve``'s parser. Once argparse has checked each flag on its own (its ``type``), it
    checks the flags that bound one another, and reports a conflict as argparse reports a bad
    value (one line, exit status 2); and it hands back plain text, not the ``EnvText`` markers."""

    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(self, args: Iterable[str] | None, namespace: N) -> tuple[N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: N) -> tuple[N, list[str]]: ...
    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for name, value in vars(parsed).items():
            if isinstance(value, EnvText):  # a flag without a type: its variable's text as it is
                setattr(parsed, name, str(value))
        if parsed.retry_cap < parsed.retry_base:
            self.error(
                f"argument --retry-cap: {parsed.retry_cap:g} is below --retry-base {parsed.retry_base:g}: "
                "the longest retry delay cannot be shorter than the first"
            )
        return parsed, extras


def parser() -> argparse.ArgumentParser:
    """hookd's command line. Every value, from a flag or from its environment variable, is checked
    here, so a bad one stops hookd at once with one line, rather than breaking delivery later."""
    p = argparse.ArgumentParser(
        prog="hookd",
        description="hookd: webhook delivery service (gRPC API, trio delivery engine, SQLite store).",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_ServeParser)
    s = sub.add_parser(
        "serve",
        help="run the service",
        formatter_class=_HelpFormatter,
        description="Run the gRPC server and the delivery engine. Each flag can also be set with the "
        "environment variable named in its help; a flag given replaces its variable. Counts go up to "
        f"{MAX_COUNT:,}; a value out of range stops hookd at once.",
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
        type=one_of("NORMAL", "FULL"),
        default=_env("HOOKD_SYNCHRONOUS", "NORMAL"),
        help="SQLite durability: NORMAL survives a process crash, FULL also a power cut [HOOKD_SYNCHRONOUS]",
    )
    s.add_argument(
        "--port-file",
        default=_env("HOOKD_PORT_FILE", ""),
        help="write the bound port to this file once serving; its folder must exist [HOOKD_PORT_FILE]",
    )
    s.add_argument(
        "--allow-http",
        action=_Switch,
        default=_env("HOOKD_ALLOW_HTTP", ""),
        help="allow plain http destinations, not only https [HOOKD_ALLOW_HTTP=1]",
    )
    s.add_argument(
        "--allow-destination",
        action=_Entries,
        type=entry,
        default=_env_list("HOOKD_ALLOW_DESTINATIONS"),
        help="CIDR, address or host name that destinations may reach although private or "
        "loopback; repeatable; given here, replaces the variable's list [HOOKD_ALLOW_DESTINATIONS, comma-separated]",
    )
    s.add_argument(
        "--destination-ca-file",
        default=_env("HOOKD_DESTINATION_CA_FILE", ""),
        help="PEM file of CA certificates trusted for https destinations, in addition to the system's "
        "[HOOKD_DESTINATION_CA_FILE]",
    )
    s.add_argument(
        "--max-attempts",
        type=positive_count(),
        default=_env("HOOKD_MAX_ATTEMPTS", "8"),
        help="attempts per delivery before it is marked failed; at least 1 [HOOKD_MAX_ATTEMPTS]",
    )
    s.add_argument(
        "--retry-base",
        type=number_between(0, MAX_RETRY_CAP_S),
        default=_env("HOOKD_RETRY_BASE", "30"),
        help="seconds: ceiling of the first retry delay, doubled each retry (full jitter); more than 0 and "
        "at most --retry-cap [HOOKD_RETRY_BASE]",
    )
    s.add_argument(
        "--retry-cap",
        type=number_between(0, MAX_RETRY_CAP_S),
        default=_env("HOOKD_RETRY_CAP", "3600"),
        help=f"seconds: longest retry delay, Retry-After included; at most {_plain(MAX_RETRY_CAP_S)} (30 days) "
        "[HOOKD_RETRY_CAP]",
    )
    s.add_argument(
        "--breaker-threshold",
        type=positive_count(),
        default=_env("HOOKD_BREAKER_THRESHOLD", "5"),
        help="consecutive failures that open a destination's breaker; at least 1 [HOOKD_BREAKER_THRESHOLD]",
    )
    s.add_argument(
        "--breaker-cooldown",
        type=number_between(0, MAX_BREAKER_COOLDOWN_S),
        default=_env("HOOKD_BREAKER_COOLDOWN", "30"),
        help=f"seconds an open breaker waits before its probe; doubles per failed probe up to "
        f"{MAX_BREAKER_COOLDOWN_S:g} s, so more than 0 and at most that [HOOKD_BREAKER_COOLDOWN]",
    )
    s.add_argument(
        "--default-rate-limit",
        type=number_between(MIN_RATE_LIMIT, MAX_RATE_LIMIT, low_allowed=True, unit="requests per second"),
        default=_env("HOOKD_DEFAULT_RATE_LIMIT", "1000"),
        help=f"requests per second per destination when its webhooks set none; {MIN_RATE_LIMIT:g} to "
        f"{_plain(MAX_RATE_LIMIT)}, as a webhook's own [HOOKD_DEFAULT_RATE_LIMIT]",
    )
    s.add_argument(
        "--max-in-flight",
        type=positive_count(),
        default=_env("HOOKD_MAX_IN_FLIGHT", "16"),
        help="concurrent requests per destination; at least 1 [HOOKD_MAX_IN_FLIGHT]",
    )
    s.add_argument(
        "--queue-size",
        type=positive_count(),
        default=_env("HOOKD_QUEUE_SIZE", "256"),
        help="deliveries each destination holds in memory; the rest wait on disk; at least 1 [HOOKD_QUEUE_SIZE]",
    )
    s.add_argument(
        "--actor-idle",
        type=number_between(0, DAY_S),
        default=_env("HOOKD_ACTOR_IDLE", "30"),
        help="seconds a destination actor without work keeps its breaker and connections; more than 0 and "
        f"at most {_plain(DAY_S)} (a day) [HOOKD_ACTOR_IDLE]",
    )
    s.add_argument(
        "--secret-grace",
        type=number_between(0, MAX_GRACE_S, low_allowed=True),
        default=_env("HOOKD_SECRET_GRACE", "86400"),
        help="seconds the previous secret keeps signing after a rotation; 0 to "
        f"{_plain(MAX_GRACE_S)} (7 days), as RotateSecret's grace_period [HOOKD_SECRET_GRACE]",
    )
    s.add_argument(
        "--node-id",
        default=_env("HOOKD_NODE_ID", ""),
        help="this node's id in a cluster (a postgresql:// database); unique among live nodes; "
        "default: host name and a random suffix [HOOKD_NODE_ID]",
    )
    s.add_argument(
        "--lease",
        type=number_between(MIN_LEASE_S, HOUR_S, low_allowed=True),
        default=_env("HOOKD_LEASE", f"{EngineConfig.lease_s:g}"),
        help="seconds a node's ownership of its destinations lasts without renewal: a killed node's "
        f"destinations move to the others after this; {_plain(MIN_LEASE_S)} to {_plain(HOUR_S)} [HOOKD_LEASE]",
    )
    s.add_argument(
        "--retention",
        type=_naming_the_variable(duration),
        metavar="DURATION",
        default=_env("HOOKD_RETENTION", duration_text(EngineConfig.retention_s)),
        help="settled deliveries, their attempts and events no pending or held delivery needs are removed "
        "once this old: 30d, 12h, 90m, 45s or seconds; 0 keeps everything [HOOKD_RETENTION]",
    )
    s.add_argument(
        "--auto-disable-after",
        type=_naming_the_variable(duration),
        metavar="DURATION",
        default=_env("HOOKD_AUTO_DISABLE_AFTER", duration_text(EngineConfig.auto_disable_after_s)),
        help="an active webhook whose every attempt failed for this long becomes inactive (and "
        "webhook.disabled is published); same syntax; 0 never [HOOKD_AUTO_DISABLE_AFTER]",
    )
    s.add_argument(
        "--max-webhooks-per-type",
        type=positive_count(),
        default=_env("HOOKD_MAX_WEBHOOKS_PER_TYPE", str(EngineConfig.max_webhooks_per_type)),
        help="most webhooks one event type may have; creating more is RESOURCE_EXHAUSTED; at least 1 "
        "[HOOKD_MAX_WEBHOOKS_PER_TYPE]",
    )
    s.add_argument(
        "--max-deliveries-per-call",
        type=positive_count(),
        default=_env("HOOKD_MAX_DELIVERIES_PER_CALL", str(EngineConfig.max_deliveries_per_call)),
        help="most deliveries one publish call may create (events x subscribed webhooks); more is "
        "INVALID_ARGUMENT; at least 1 [HOOKD_MAX_DELIVERIES_PER_CALL]",
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
        action=_Entries,
        type=entry,
        default=_env_list("HOOKD_AUTH_TOKENS"),
        help="require 'authorization: Bearer <token>' on every call; repeatable; given here, replaces the "
        "variable's list [HOOKD_AUTH_TOKENS, comma-separated]",
    )
    s.add_argument(
        "--protect-health",
        action=_Switch,
        default=_env("HOOKD_PROTECT_HEALTH", ""),
        help="with tokens set, require a token for grpc.health.v1 too [HOOKD_PROTECT_HEALTH=1]",
    )
    s.add_argument(
        "--protect-reflection",
        action=_Switch,
        default=_env("HOOKD_PROTECT_REFLECTION", ""),
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
        type=positive_count(),
        default=_env("HOOKD_MAX_WATCHERS", str(DEFAULT_MAX_WATCHERS)),
        help="StreamHealth calls open at once; one more is RESOURCE_EXHAUSTED; at least 1 [HOOKD_MAX_WATCHERS]",
    )
    s.add_argument(
        "--watcher-send-timeout",
        type=number_between(0, HOUR_S),
        default=_env("HOOKD_WATCHER_SEND_TIMEOUT", f"{DEFAULT_SEND_TIMEOUT_S:g}"),
        help="seconds a StreamHealth watcher may take to accept a snapshot before it is dropped; more than 0 "
        f"and at most {_plain(HOUR_S)} [HOOKD_WATCHER_SEND_TIMEOUT]",
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
        type=one_of(*LOG_LEVELS),
        default=_env("HOOKD_LOG_LEVEL", "info"),
        choices=LOG_LEVELS,
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
