"""What hookctl prints: rich tables for people, protobuf JSON for scripts.

Commands only fetch data and pick a renderer here, so the look of a webhook or a delivery is
the same wherever it appears, and ``--json`` always means the canonical protobuf JSON mapping.
Everything printed for people goes through ``EscapingConsole``, which shows control characters
as escapes, since much of it is text a destination or a caller chose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Span, Text

from hookd.v1 import hookd_pb2 as pb

if TYPE_CHECKING:
    from hookd.client.listen import Delivery

NONE = Text("-", style="dim")
SECRET_NOTE = Text("Keep the signing secret: it is shown in full only now (and by rotate-secret).", style="yellow")

_DELIVERY_STYLES = {
    pb.Delivery.PENDING: "yellow",
    pb.Delivery.HELD: "blue",
    pb.Delivery.SUCCEEDED: "green",
    pb.Delivery.FAILED: "red",
    pb.Delivery.DISCARDED: "dim",
    pb.Delivery.CANCELLED: "dim",
}
_BREAKER_STYLES = {pb.CLOSED: "green", pb.OPEN: "red", pb.HALF_OPEN: "yellow"}
FIVE_MINUTES = 300


# -- control characters --------------------------------------------------------------------------

#: C0 controls but tab and newline, DEL, and C1 controls: what a terminal may act on rather than
#: show. Carriage return is among them: it lets a line overwrite what came before it on screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def printable(text: str) -> str:
    """``text`` with each control character shown as an escape (ESC as ``\\x1b``), so printing
    it cannot move the cursor, clear the screen, retitle the window or set the clipboard (OSC 52).
    hookd stores the start of every answer a destination sends, unchanged, and hookctl prints it."""
    return _CONTROL.sub(_escape, text)


def _printable_text(text: Text) -> Text:
    """A copy of ``text`` with its control characters escaped and its styles kept on the same
    characters (each escape is four characters where the control was one)."""
    plain = text.plain
    if not _CONTROL.search(plain):
        return text
    offsets = [0]
    for char in plain:
        offsets.append(offsets[-1] + (4 if _CONTROL.match(char) else 1))
    spans = [
        Span(offsets[min(span.start, len(plain))], offsets[min(span.end, len(plain))], span.style)
        for span in text.spans
    ]
    escaped = text.blank_copy(printable(plain))
    escaped.spans = spans
    return escaped


class EscapingConsole(Console):
    """The console hookctl prints with: every string and ``Text`` it renders, at any depth of a
    table or group, has its control characters escaped (``printable``). Doing it here rather
    than field by field means no value a server or a destination supplies can be missed by a
    renderer written later. rich itself strips only BEL, BS, VT, FF and CR from text, not ESC.

    Strings are escaped before tables measure them, so columns fit; ``Text`` built by the
    renderers is escaped as it is drawn (its escapes fold within the width measured for it).
    rich's own control output (styles, cursor moves of a live display) is not text and passes.
    """

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        if isinstance(renderable, Text):
            renderable = _printable_text(renderable)
        return super().render(renderable, options)


# -- JSON ----------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Messages through ``MessageToDict`` (zero values included, so scripts see every field)."""
    if isinstance(value, Message):
        return json_format.MessageToDict(value, always_print_fields_with_no_presence=True)
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def to_json(value: Any, *, compact: bool = False) -> str:
    """One document; ``compact`` gives one line per value, for streams read line by line."""
    if compact:
        return json.dumps(jsonable(value), separators=(",", ":"))
    return json.dumps(jsonable(value), indent=2)


# -- small values --------------------------------------------------------------------------------


def when(stamp: timestamp_pb2.Timestamp) -> Text:
    """Local wall-clock time; an unset timestamp is a dash, not 1970."""
    if not stamp.seconds and not stamp.nanos:
        return NONE
    return Text(datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9).strftime("%Y-%m-%d %H:%M:%S"))


def millis(value: duration_pb2.Duration) -> str:
    return f"{value.ToNanoseconds() / 1e6:.1f} ms"


def seconds(value: duration_pb2.Duration) -> str:
    return f"{value.ToNanoseconds() / 1e9:g} s"


def optional(value: str) -> RenderableType:
    """The value, or a dim dash when empty. A plain string, so the console escapes it whole
    (carriage returns too, which a ``Text`` would already have dropped)."""
    return value if value else NONE


def webhook_status(status: pb.Webhook.Status.ValueType, disabled_reason: str = "") -> Text:
    """Green ``Active``, dim ``Inactive``, red ``Disabled`` when hookd switched it off itself."""
    if status == pb.Webhook.INACTIVE and disabled_reason:
        return Text("Disabled", style="red")
    if status == pb.Webhook.INACTIVE:
        return Text("Inactive", style="dim")
    if status == pb.Webhook.ACTIVE:
        return Text("Active", style="green")
    return NONE


def delivery_state(state: pb.Delivery.State.ValueType) -> Text:
    return Text(pb.Delivery.State.Name(state).lower(), style=_DELIVERY_STYLES.get(state, ""))


def outcome(value: pb.Outcome.ValueType) -> Text:
    if value == pb.OUTCOME_UNSPECIFIED:
        return NONE
    return Text(pb.Outcome.Name(value), style="green" if value == pb.SUCCESS else "red")


def breaker(state: pb.BreakerState.ValueType) -> Text:
    if state == pb.BREAKER_STATE_UNSPECIFIED:
        return NONE
    return Text(pb.BreakerState.Name(state).lower().replace("_", "-"), style=_BREAKER_STYLES.get(state, ""))


def auth_summary(auth: pb.DestinationAuth) -> Text:
    """The method and its (already masked) credentials."""
    method = auth.WhichOneof("method")
    if method == "bearer":
        return Text(f"bearer {auth.bearer.token}")
    if method == "basic":
        return Text(f"basic {auth.basic.username}:{auth.basic.password}")
    if method == "headers":
        return Text("headers " + ", ".join(f"{k}: {v}" for k, v in sorted(auth.headers.headers.items())))
    return Text("none", style="dim")


def _fields(rows: Iterable[tuple[str, RenderableType]], title: str | None = None) -> Table:
    """A two-column key/value table; values fold rather than truncate (names and secrets must be whole)."""
    table = Table(box=None, show_header=False, title=title, title_justify="left", title_style="bold")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


# -- webhooks ------------------------------------------------------------------------------------


def next_page(page: pb.ListWebhooksResponse | pb.ListDeliveriesResponse) -> list[Text]:
    """The hint for the next page, if there is one."""
    if not page.next_page_token:
        return []
    return [Text(f"next page: --page-token {page.next_page_token} (with the same filters)", style="dim")]


def webhooks_table(webhooks: Sequence[pb.Webhook], *, total: int | None = None) -> Table:
    caption = f"{len(webhooks)} of {total}" if total is not None else f"{len(webhooks)} shown"
    table = Table(box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
    table.add_column("Resource", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    table.add_column("URL", overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Name", overflow="fold")
    for hook in webhooks:
        table.add_row(hook.resource, hook.event, hook.url, webhook_status(hook.status, hook.disabled_reason), hook.name)
    return table


def webhook_detail(hook: pb.Webhook) -> Table:
    policy = pb.Webhook.InactivePolicy.Name(hook.inactive_policy).lower() if hook.inactive_policy else "-"
    ordering = pb.Webhook.Ordering.Name(hook.ordering).lower() if hook.ordering else "-"
    rows: list[tuple[str, RenderableType]] = [
        ("Name", hook.name),
        ("Resource", hook.resource),
        ("Event", hook.event),
        ("URL", hook.url),
        ("Status", webhook_status(hook.status, hook.disabled_reason)),
    ]
    if hook.disabled_reason:
        rows.append(("Disabled", Text.assemble(when(hook.disable_time), " ", (hook.disabled_reason, "red"))))
    rows += [
        ("While inactive", policy),
        ("Ordering", ordering),
        ("Auth", auth_summary(hook.auth)),
        ("Signing secret", hook.signing_secret),
        ("Description", optional(hook.description)),
        ("Rate limit", f"{hook.rate_limit:g}/s" if hook.rate_limit else Text("server default", style="dim")),
        ("Timeout", seconds(hook.timeout) if hook.HasField("timeout") else NONE),
        ("Created", when(hook.create_time)),
        ("Updated", when(hook.update_time)),
    ]
    if hook.HasField("previous_secret_expire_time"):
        rows.append(("Previous secret until", when(hook.previous_secret_expire_time)))
    return _fields(rows)


def attempt_detail(attempt: pb.Attempt) -> Table:
    return _fields(
        [
            ("Status code", str(attempt.status_code) if attempt.status_code else NONE),
            ("Latency", millis(attempt.duration)),
            ("Outcome", outcome(attempt.outcome)),
            ("Error", optional(attempt.error)),
            ("URL", attempt.url),
            ("Response", optional(attempt.response_excerpt)),
            ("Attempt", attempt.name),
        ]
    )


# -- events --------------------------------------------------------------------------------------


def published(answer: pb.PublishEventResponse) -> Table:
    duplicate = Text("yes: already published with this key, nothing sent again", style="yellow")
    return _fields(
        [
            ("Event", answer.name),
            ("Deliveries", str(answer.delivery_count)),
            ("Duplicate", duplicate if answer.duplicate else Text("no")),
        ]
    )


def event_types_table(types: Sequence[pb.EventType]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Resource")
    table.add_column("Event")
    table.add_column("Type")
    for item in types:
        table.add_row(item.resource, item.event, item.type)
    return table


# -- deliveries ----------------------------------------------------------------------------------


def deliveries_table(deliveries: Sequence[pb.Delivery]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, caption=f"{len(deliveries)} shown", caption_justify="left")
    table.add_column("Delivery", overflow="fold")
    table.add_column("Type", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Attempts", justify="right")
    table.add_column("Last error", overflow="fold")
    table.add_column("Created", no_wrap=True)
    for item in deliveries:
        table.add_row(
            item.name,
            item.event_type,
            delivery_state(item.state),
            str(item.attempt_count),
            optional(item.last_error),
            when(item.create_time),
        )
    return table


def delivery_detail(delivery: pb.Delivery, attempts: Sequence[pb.Attempt] | None = None) -> Group:
    fields = _fields(
        [
            ("Delivery", delivery.name),
            ("Event", delivery.event),
            ("Type", delivery.event_type),
            ("State", delivery_state(delivery.state)),
            ("Attempts", str(delivery.attempt_count)),
            ("Next attempt", when(delivery.next_attempt_time)),
            ("Last error", optional(delivery.last_error)),
            ("Message id", delivery.message_id),
            ("Created", when(delivery.create_time)),
            ("Updated", when(delivery.update_time)),
        ]
    )
    if attempts is None:
        return Group(fields)
    table = Table(box=box.SIMPLE_HEAD, title="Attempts", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("Started", no_wrap=True)
    table.add_column("Latency", justify="right", no_wrap=True)
    table.add_column("Status", justify="right")
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Error", overflow="fold")
    for number, attempt in enumerate(attempts, 1):
        table.add_row(
            str(number),
            when(attempt.start_time),
            millis(attempt.duration),
            str(attempt.status_code) if attempt.status_code else NONE,
            outcome(attempt.outcome),
            optional(attempt.error),
        )
    return Group(fields, Text(), table)


def recovered(answer: pb.RecoverDeliveriesResponse) -> Text:
    count = answer.recovered_count
    if not count:
        return Text("Nothing to recover: no finished delivery of an active webhook matches.", style="dim")
    noun = "delivery" if count == 1 else "deliveries"
    return Text(f"Recovered {count} {noun}: each is sent once more, now.")


# -- health --------------------------------------------------------------------------------------


def five_minutes(stats: pb.HealthStats) -> pb.WindowStats | None:
    for window in stats.windows:
        if window.window.seconds == FIVE_MINUTES:
            return window
    return None


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _percent(value: float) -> str:
    return f"{value:.0%}" if round(value * 100, 1).is_integer() else f"{value:.1%}"


def _health_row(table: Table, stats: pb.HealthStats, key: RenderableType) -> None:
    window = five_minutes(stats)
    if window is None or not window.attempts:
        rate: RenderableType = NONE
        latency: RenderableType = NONE
    else:
        style = "green" if window.success_rate >= 0.99 else "yellow" if window.success_rate >= 0.9 else "red"
        rate = Text(f"{_percent(window.success_rate)} of {window.attempts}", style=style)
        latency = "/".join(_ms(value) for value in (window.p50_ms, window.p95_ms, window.p99_ms))
    table.add_row(
        key,
        rate,
        latency,
        str(stats.backlog),
        str(stats.queued_in_memory),
        str(stats.in_flight),
        str(stats.retries_scheduled),
        breaker(stats.breaker_state),
    )


def health_table(snapshot: pb.HealthSnapshot) -> Group:
    """The service, then each destination, then each webhook, over the last 5 minutes; then last errors.

    Errors go below the table rather than in a column, so the figures fit an 80-column terminal.
    """
    title = Text.assemble(("Delivery health", "bold"), f" at {when(snapshot.time)}, last 5 minutes")
    table = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        caption="Backlog: waiting on disk; Mem: queued in memory; Flight: requests in flight; Retry: awaiting a retry",
        caption_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Scope", overflow="fold", min_width=16)
    table.add_column("Success", no_wrap=True)
    table.add_column("p50/95/99 ms", no_wrap=True)
    for name in ("Backlog", "Mem", "Flight", "Retry"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Breaker", no_wrap=True)
    _health_row(table, snapshot.service, Text("service", style="bold"))
    if snapshot.destinations:
        table.add_section()
    for stats in snapshot.destinations:
        _health_row(table, stats, Text.assemble(stats.key, (f" @{stats.owner}", "dim")) if stats.owner else stats.key)
    if snapshot.webhooks:
        table.add_section()
    for stats in snapshot.webhooks:
        _health_row(table, stats, stats.key)
    parts: list[RenderableType] = []
    if snapshot.HasField("store") and not snapshot.store.available:
        parts.append(
            Text(f"Store unavailable since {when(snapshot.store.since)}: {snapshot.store.reason}", style="bold red")
        )
    parts.append(table)
    failing = [stats for stats in (*snapshot.destinations, *snapshot.webhooks) if stats.last_error]
    if failing:
        errors = Table(box=None, title="Last errors", title_justify="left", show_header=False, pad_edge=False)
        errors.add_column(overflow="fold")
        errors.add_column(overflow="fold", style="red")
        errors.add_column(no_wrap=True, style="dim")
        for stats in failing:
            errors.add_row(stats.key, stats.last_error, when(stats.last_failure_time))
        parts.append(errors)
    if snapshot.nodes:
        parts.append(nodes_table(snapshot.nodes))
    return Group(*parts)


_NODE_STYLES = {"active": "green", "leaving": "yellow", "dead": "red"}


def nodes_table(nodes: Sequence[pb.NodeStatus]) -> Table:
    """The cluster's nodes: who is up, where, and what share of the destinations each holds."""
    table = Table(box=box.SIMPLE_HEAD, title="Nodes", title_justify="left", pad_edge=False, collapse_padding=True)
    for name, justify in (
        ("Node", "left"),
        ("State", "left"),
        ("Address", "left"),
        ("Slots", "right"),
        ("Actors", "right"),
        ("Heartbeat", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for node in nodes:
        table.add_row(
            node.id,
            Text(node.state, style=_NODE_STYLES.get(node.state, "")),
            node.address or NONE,
            str(node.slots),
            str(node.destinations),
            when(node.last_heartbeat_time),
        )
    return table


# -- listen --------------------------------------------------------------------------------------

_SIGNATURE_STYLES = {"ok": "green", "invalid": "bold red", "unchecked": "dim"}


def received(delivery: Delivery) -> Text:
    """One request seen by ``hookctl listen``: what it was, whether its signature holds, the answer.

    Whoever sent it chose all but the time and the answer, so each part is escaped before it goes
    into the ``Text``, where rich would drop a carriage return or a backspace unseen.
    """
    clock = datetime.fromtimestamp(delivery.time).strftime("%H:%M:%S")
    signature = f"signature {delivery.signature}"
    if delivery.signature_error:
        signature += f" ({delivery.signature_error})"
    answer_style = "green" if 200 <= delivery.status < 300 else "red"
    return Text.assemble(
        (clock, "dim"),
        printable(f"  {delivery.method} {delivery.path}  "),
        (printable(delivery.event_type or "?"), "bold"),
        printable(f"  {delivery.event_id or '-'}  msg {delivery.message_id or '-'}  "),
        (printable(signature), _SIGNATURE_STYLES.get(delivery.signature, "")),
        "  -> ",
        (str(delivery.status), answer_style),
        f" after {delivery.delay:g} s" if delivery.delay else "",
        "\n  ",
        (printable(" ".join(delivery.body.split())), "dim"),
    )
