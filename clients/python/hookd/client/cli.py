"""``hookctl``: the hookd command line, a thin layer of click commands over ``HookdClient``.

Each command fetches, then hands the result to ``render`` (rich tables, or protobuf JSON with
``--json``). Failed calls become one ``error: CODE: details`` line on stderr and exit code 1,
never a traceback: an operator at a terminal needs the server's message, not our stack.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import click
import grpc
from rich.console import Console, RenderableType
from rich.live import Live

from hookd.client import inputs, limits, render
from hookd.client.client import HookdClient, webhook_name
from hookd.client.errors import DeadlineExceeded, HookdError, Unavailable, from_rpc_error
from hookd.client.listen import Delivery, Listener, secret_checker
from hookd.v1 import hookd_pb2 as pb

DEFAULT_ADDRESS = "127.0.0.1:50051"
F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A failure worth one line on stderr: ``error: ...``, exit code 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _console() -> Console:
    """A console that prints server data verbatim (no markup, emoji codes or highlighting in names,
    URLs, descriptions) but with control characters escaped (see ``render.EscapingConsole``), with
    tables at their natural width in a file or pipe rather than 80 columns.
    """
    console = render.EscapingConsole(markup=False, emoji=False, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


@dataclass
class App:
    """What every command shares: where the server is, how to print, one lazily opened channel."""

    address: str
    token: str | None
    json: bool
    tls: bool = False
    ca_cert: bytes | None = None
    console: Console = field(default_factory=_console)
    _client: HookdClient | None = None

    @property
    def client(self) -> HookdClient:
        if self._client is None:
            self._client = HookdClient(self.address, token=self.token, tls=self.tls, root_certificates=self.ca_cert)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def show(self, data: Any, *renderables: RenderableType) -> None:
        """``data`` as JSON with ``--json``, else the renderables (built from the same data)."""
        if self.json:
            click.echo(render.to_json(data))
            return
        for renderable in renderables:
            self.console.print(renderable)


pass_app = click.make_pass_decorator(App)


def _one_line(error: HookdError, address: str) -> str:
    """The server's message on one line, its control characters escaped (it may quote what a
    caller or a destination sent); for the failures of the call itself, which server it was."""
    details = render.printable(" ".join(error.details.split()))
    if isinstance(error, Unavailable):
        return f"{error.code.name}: cannot reach hookd at {address}: {details}"
    if isinstance(error, DeadlineExceeded):
        return f"{error.code.name}: hookd at {address}: {details}"
    return f"{error.code.name}: {details}"


class _Root(click.Group):
    """Turns any failed call below it into a ``Failure``, whichever command made it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except grpc.RpcError as error:  # a call that bypassed the client's named errors
            raise Failure(_one_line(from_rpc_error(error), _address(ctx))) from None
        except HookdError as error:
            raise Failure(_one_line(error, _address(ctx))) from None


def _address(ctx: click.Context) -> str:
    app = ctx.find_object(App)
    return app.address if app else "?"


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.json = True


#: ``--json`` is accepted after the command too (``hookctl webhooks list --json``).
json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_set_json, help="Print protobuf JSON instead of tables."
)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--address",
    envvar="HOOKD_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="hookd's gRPC host:port [env HOOKD_ADDRESS].",
)
@click.option("--token", envvar="HOOKD_TOKEN", help="Sent as 'authorization: Bearer TOKEN' [env HOOKD_TOKEN].")
@click.option(
    "--tls", is_flag=True, envvar="HOOKD_TLS", help="Connect over TLS, trusting the system's CAs [env HOOKD_TLS]."
)
@click.option(
    "--ca-cert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="HOOKD_CA_CERT",
    help="Connect over TLS, trusting this PEM CA [env HOOKD_CA_CERT].",
)
@click.option("--json", "as_json", is_flag=True, help="Print protobuf JSON instead of tables.")
@click.pass_context
def cli(ctx: click.Context, address: str, token: str | None, tls: bool, ca_cert: str | None, as_json: bool) -> None:
    """Manage hookd webhooks, publish events, inspect deliveries and watch delivery health."""
    ca = Path(ca_cert).read_bytes() if ca_cert else None
    app = ctx.obj = App(address=address, token=token or None, json=as_json, tls=tls, ca_cert=ca)
    ctx.call_on_close(app.close)


# -- webhooks ------------------------------------------------------------------------------------


@cli.group()
def webhooks() -> None:
    """Register, change and test webhooks."""


@webhooks.command("list")
@click.option("--search", "query", default="", help="Case-insensitive text in resource, event or URL.")
@click.option("--resource", default="", help="Only webhooks of this resource.")
@click.option("--event", default="", help="Only webhooks of this event.")
@click.option("--status", type=click.Choice(sorted(inputs.WEBHOOK_STATUSES), case_sensitive=False))
@click.option("--page-size", type=click.IntRange(1, 1000), help="Webhooks per page (server default 50).")
@click.option("--page-token", default="", help="next_page_token of the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page.")
@json_option
@pass_app
def list_webhooks(
    app: App,
    query: str,
    resource: str,
    event: str,
    status: str | None,
    page_size: int | None,
    page_token: str,
    all_pages: bool,
) -> None:
    """List webhooks, oldest first."""
    if all_pages and page_token:
        raise click.UsageError("--page-token and --all exclude each other")
    filters: dict[str, Any] = {
        "query": query,
        "resource": resource,
        "event": event,
        "status": inputs.WEBHOOK_STATUSES[status.lower()] if status else pb.Webhook.STATUS_UNSPECIFIED,
        "page_size": page_size or 0,
    }
    if all_pages:
        hooks = list(app.client.iter_webhooks(**filters))
        app.show({"webhooks": hooks, "totalSize": len(hooks)}, render.webhooks_table(hooks, total=len(hooks)))
        return
    page = app.client.list_webhooks(page_token=page_token, **filters)
    app.show(page, render.webhooks_table(page.webhooks, total=page.total_size), *render.next_page(page))


def webhook_options(*, create: bool) -> Callable[[F], F]:
    """The options ``create`` and ``edit`` share; on ``edit`` none is required and each is optional."""
    options = [
        click.option("--resource", required=create, help="order, product, customer, payment or shipping."),
        click.option("--event", required=create, help="An event of that resource (see 'events types')."),
        click.option("--url", required=create, help="http(s) URL the events are POSTed to."),
        click.option("--bearer", metavar="TOKEN", help="Authenticate with 'Authorization: Bearer TOKEN'."),
        click.option("--basic", metavar="USER:PASS", help="Authenticate with HTTP basic auth."),
        click.option("--header", "headers", metavar="'NAME: VALUE'", multiple=True, help="Extra header; repeatable."),
        click.option("--active/--inactive", default=None, help="Deliver events or not [create: active]."),
        click.option(
            "--discard/--queue",
            default=None,
            help="While inactive, drop events or hold them until activated [create: queue].",
        ),
        click.option("--description", help="Free text for people."),
        click.option(
            "--rate-limit",
            type=inputs.RateLimit(),
            help=f"Most requests per second, {limits.MIN_RATE_LIMIT:g} to {limits.MAX_RATE_LIMIT:g}; 0: default.",
        ),
        click.option(
            "--timeout",
            type=inputs.Finite(limits.MIN_TIMEOUT_S, limits.MAX_TIMEOUT_S),
            metavar="SECONDS",
            help=f"Time allowed per request ({limits.MIN_TIMEOUT_S:g} to {limits.MAX_TIMEOUT_S:g}).",
        ),
        click.option(
            "--ordered/--unordered",
            default=None,
            help="Send one delivery at a time in publish order, or side by side [create: unordered].",
        ),
    ]
    if not create:
        options.append(click.option("--no-auth", is_flag=True, help="Remove the authentication."))

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@webhooks.command()
@webhook_options(create=True)
@json_option
@pass_app
def create(app: App, /, **options: Any) -> None:
    """Register a webhook; prints its signing secret, which is shown in full only now."""
    webhook, _ = inputs.WebhookOptions(**options).changes()
    hook = app.client.create_webhook(
        webhook.resource,
        webhook.event,
        webhook.url,
        auth=webhook.auth if webhook.HasField("auth") else None,
        status=webhook.status,
        inactive_policy=webhook.inactive_policy,
        description=webhook.description,
        rate_limit=webhook.rate_limit,
        timeout_s=options["timeout"],
        ordering=webhook.ordering,
    )
    app.show(hook, render.webhook_detail(hook), render.SECRET_NOTE)


@webhooks.command()
@click.argument("name")
@json_option
@pass_app
def get(app: App, name: str) -> None:
    """Show one webhook (secret and credentials masked)."""
    hook = app.client.get_webhook(name)
    app.show(hook, render.webhook_detail(hook))


@webhooks.command()
@click.argument("name")
@webhook_options(create=False)
@json_option
@pass_app
def edit(app: App, /, name: str, **options: Any) -> None:
    """Change the given fields of a webhook, and only those."""
    webhook, paths = inputs.WebhookOptions(**options).changes()
    if not paths:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    webhook.name = webhook_name(name)
    hook = app.client.update_webhook(webhook, paths)
    app.show(hook, render.webhook_detail(hook))


@webhooks.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def delete(app: App, name: str, yes: bool) -> None:
    """Delete a webhook and cancel its pending deliveries."""
    name = webhook_name(name)
    if not yes:
        hook = app.client.get_webhook(name)  # a missing webhook fails before anyone is asked
        if not sys.stdin.isatty():
            raise Failure(f"not deleting {name}: nobody can confirm (stdin is not a terminal); pass --yes")
        target = render.printable(f"{hook.resource}.{hook.event} -> {hook.url}")
        click.confirm(f"Delete {name} ({target})?", abort=True, err=True)
    answer = app.client.delete_webhook(name)
    app.show(
        {"name": name, **render.jsonable(answer)},
        f"Deleted {name}; cancelled {answer.cancelled_deliveries} pending deliveries.",
    )


def _set_status(app: App, name: str, status: pb.Webhook.Status.ValueType) -> None:
    hook = app.client.set_status(name, status)
    app.show(hook, render.webhook_detail(hook))


@webhooks.command()
@click.argument("name")
@json_option
@pass_app
def activate(app: App, name: str) -> None:
    """Deliver events again (held deliveries are sent, in order)."""
    _set_status(app, name, pb.Webhook.ACTIVE)


@webhooks.command()
@click.argument("name")
@json_option
@pass_app
def deactivate(app: App, name: str) -> None:
    """Stop delivering; events are held or discarded per the webhook's policy."""
    _set_status(app, name, pb.Webhook.INACTIVE)


@webhooks.command()
@click.argument("name")
@json_option
@pass_app
def test(app: App, name: str) -> None:
    """Send a signed ping now, without retries, and show how it went."""
    attempt = app.client.test_webhook(name).attempt
    app.show(attempt, render.attempt_detail(attempt))


@webhooks.command("rotate-secret")
@click.argument("name")
@click.option(
    "--grace",
    type=inputs.Finite(0, limits.MAX_GRACE_S),
    metavar="SECONDS",
    help=f"How long the old secret keeps signing too, up to {limits.MAX_GRACE_S:g} (7 days) [server default: 24 h].",
)
@json_option
@pass_app
def rotate_secret(app: App, name: str, grace: float | None) -> None:
    """Issue a new signing secret; prints it in full."""
    hook = app.client.rotate_secret(name, grace)
    app.show(hook, render.webhook_detail(hook), render.SECRET_NOTE)


# -- events --------------------------------------------------------------------------------------


@cli.group()
def events() -> None:
    """Publish events and list the event types."""


@events.command()
@click.argument("resource")
@click.argument("event")
@click.option("--data", metavar="JSON", help="The resource's data, a JSON object.")
@click.option("--related", metavar="JSON", help="Related data, a JSON object.")
@click.option("--idempotency-key", default="", help="Publishing the same key again within 24 h sends nothing twice.")
@json_option
@pass_app
def publish(app: App, resource: str, event: str, data: str | None, related: str | None, idempotency_key: str) -> None:
    """Publish one event to every webhook subscribed to RESOURCE EVENT."""
    answer = app.client.publish_event(
        resource,
        event,
        inputs.json_object(data, "--data"),
        inputs.json_object(related, "--related"),
        idempotency_key=idempotency_key,
    )
    app.show(answer, render.published(answer))


@events.command()
@json_option
@pass_app
def types(app: App) -> None:
    """List the event types webhooks may subscribe to."""
    answer = app.client.list_event_types()
    app.show(answer, render.event_types_table(answer.event_types))


# -- deliveries ----------------------------------------------------------------------------------


@cli.group()
def deliveries() -> None:
    """Inspect deliveries and their attempts; retry failed ones."""


@deliveries.command("list")
@click.option("--webhook", default="webhooks/-", help="Only this webhook's deliveries.")
@click.option("--event", default="", help="Only deliveries of this event (events/... or its id).")
@click.option("--state", type=click.Choice(sorted(inputs.DELIVERY_STATES), case_sensitive=False))
@click.option("--page-size", type=click.IntRange(1, 1000), help="Deliveries per page (server default 50).")
@click.option("--page-token", default="", help="next_page_token of the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page.")
@json_option
@pass_app
def list_deliveries(
    app: App, webhook: str, event: str, state: str | None, page_size: int | None, page_token: str, all_pages: bool
) -> None:
    """List deliveries, newest first."""
    if all_pages and page_token:
        raise click.UsageError("--page-token and --all exclude each other")
    filters: dict[str, Any] = {
        "event": inputs.event_name(event) if event else "",
        "state": inputs.DELIVERY_STATES[state.lower()] if state else pb.Delivery.STATE_UNSPECIFIED,
        "page_size": page_size or 0,
    }
    if all_pages:
        items = list(app.client.iter_deliveries(webhook, **filters))
        app.show({"deliveries": items}, render.deliveries_table(items))
        return
    page = app.client.list_deliveries(webhook, page_token=page_token, **filters)
    app.show(page, render.deliveries_table(page.deliveries), *render.next_page(page))


@deliveries.command()
@click.argument("delivery")
@json_option
@pass_app
def show(app: App, delivery: str) -> None:
    """Show a delivery (webhooks/.../deliveries/ID, or just ID) and its attempts."""
    item = app.client.find_delivery(delivery)
    attempts = list(app.client.iter_attempts(item.name))
    app.show({"delivery": item, "attempts": attempts}, render.delivery_detail(item, attempts))


@deliveries.command()
@click.argument("delivery")
@json_option
@pass_app
def retry(app: App, delivery: str) -> None:
    """Send a failed, cancelled or discarded delivery again now."""
    name = delivery if "/deliveries/" in delivery else app.client.find_delivery(delivery).name
    item = app.client.retry_delivery(name)
    app.show(item, render.delivery_detail(item))


@deliveries.command()
@click.option("--webhook", default="webhooks/-", help="Only this webhook's deliveries [every active webhook].")
@click.option(
    "--since",
    metavar="TIME",
    help="Only deliveries made at or after TIME: 2026-01-31T08:00:00Z, or an age (2h: two hours ago).",
)
@click.option("--until", metavar="TIME", help="Only deliveries made before TIME (same forms).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(sorted(inputs.FINISHED_STATES), case_sensitive=False),
    help="Only deliveries in this state; repeatable [failed].",
)
@json_option
@pass_app
def recover(app: App, webhook: str, since: str | None, until: str | None, states: tuple[str, ...]) -> None:
    """Send finished deliveries again (after an outage, say): each match once more, now, to its
    webhook's current URL. Test pings are never sent again."""
    answer = app.client.recover_deliveries(
        webhook,
        start_time=inputs.point_in_time(since, "--since") if since else None,
        end_time=inputs.point_in_time(until, "--until") if until else None,
        states=[inputs.FINISHED_STATES[state.lower()] for state in states],
    )
    app.show(answer, render.recovered(answer))


# -- health --------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _watch(app: App, stream: Iterator[pb.HealthSnapshot]) -> None:
    """JSON lines, a live table on a terminal, or one table per snapshot into a file or pipe."""
    if app.json:
        for snapshot in stream:
            click.echo(render.to_json(snapshot, compact=True))
    elif app.console.is_terminal:
        with Live(console=app.console, auto_refresh=False) as live:
            for snapshot in stream:
                live.update(render.health_table(snapshot), refresh=True)
    else:
        for snapshot in stream:
            app.console.print(render.health_table(snapshot))


@cli.command()
@click.option("--webhook", "webhooks", multiple=True, metavar="NAME", help="Only this webhook; repeatable.")
@click.option("--destination", "destinations", multiple=True, metavar="URL", help="Only this URL; repeatable.")
@click.option("--watch", is_flag=True, help="Keep updating until Ctrl-C.")
@click.option(
    "--interval",
    type=inputs.Finite(limits.MIN_HEALTH_INTERVAL_S, inputs.MAX_HEALTH_INTERVAL_S),
    metavar="SECONDS",
    help=f"Between updates, {limits.MIN_HEALTH_INTERVAL_S:g} to {inputs.MAX_HEALTH_INTERVAL_S:g} [1].",
)
@json_option
@pass_app
def health(
    app: App, webhooks: tuple[str, ...], destinations: tuple[str, ...], watch: bool, interval: float | None
) -> None:
    """Delivery health over the last 5 minutes: success rate, latency, backlog, breakers."""
    if interval is not None and not watch:
        raise click.UsageError("--interval applies only with --watch")
    stream = app.client.stream_health(webhooks=webhooks, destinations=destinations, interval_s=interval)
    try:
        if not watch:
            snapshot = next(stream)
            app.show(snapshot, render.health_table(snapshot))
            return
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            _watch(app, stream)
        except KeyboardInterrupt:
            pass  # the way to stop watching: exit 0
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        stream.close()  # type: ignore[attr-defined]


# -- listen --------------------------------------------------------------------------------------


def _check_secret(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            secret_checker(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return value


def _reporter(app: App) -> Callable[[Delivery], None]:
    if app.json:
        return lambda delivery: click.echo(render.to_json(delivery.as_dict(), compact=True))
    return lambda delivery: app.console.print(render.received(delivery), soft_wrap=True)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free one.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--secret", metavar="whsec_...", callback=_check_secret, help="The webhook's secret: check signatures.")
@click.option("--status", type=click.IntRange(100, 599), default=200, show_default=True, help="Status to answer.")
@click.option(
    "--delay",
    type=inputs.Finite(0, inputs.MAX_LISTEN_DELAY_S),
    default=0.0,
    metavar="SECONDS",
    help=f"Wait before answering, up to {inputs.MAX_LISTEN_DELAY_S:g}.",
)
@json_option
@pass_app
def listen(app: App, port: int, host: str, secret: str | None, status: int, delay: float) -> None:
    """Receive webhooks locally and print each one, checking its signature; Ctrl-C stops."""
    try:
        listener = Listener(host, port, _reporter(app), secret=secret, status=status, delay=delay)
    except OSError as error:
        raise Failure(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    checking = "checking signatures" if secret else "signatures not checked: no --secret"
    click.echo(f"listening on {listener.url} ({checking}), answering {status}; Ctrl-C stops", err=True)
    listener.serve()
    click.echo("stopped", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``hookctl`` entry point."""
    cli.main(args=argv, prog_name="hookctl")


if __name__ == "__main__":
    main()
