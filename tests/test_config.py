"""``hookd serve``'s settings, checked where they are read: every flag and ``HOOKD_*`` variable
is refused at once with argparse's one-line error (exit status 2) when it is out of range, rather
than breaking delivery later; token lists hold exactly what the operator wrote; help shows no
secret; the database URL is logged without its passwords.

Most cases run the real parser in-process (fast); one starts the real server to show that a
token left off the command line no longer opens anything.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

import pytest

from hookd.client import Unauthenticated
from hookd.engine.config import EngineConfig
from hookd.engine.core import MAX_GRACE_S
from hookd.engine.store.postgres import redact
from hookd.server import config
from tests.support.server import HookdProcess


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``HOOKD_*`` variable from the shell that runs the tests: each test sets its own."""
    for name in list(os.environ):
        if name.startswith("HOOKD_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> argparse.Namespace:
    return config.parser().parse_args(["serve", *argv])


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The error line of a refused command line, after checking it is argparse's (status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        parse(*argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("hookd serve: error: "), lines
    assert not any("Traceback" in line for line in lines), lines
    return lines[-1]


#: A value each numeric flag used to take, and that broke delivery or the API later.
OUT_OF_RANGE = [
    ("--max-attempts", "0"),
    ("--retry-base", "0"),
    ("--retry-base", "nan"),
    ("--retry-base", "-1"),
    ("--retry-cap", "inf"),
    ("--retry-cap", "0"),
    ("--breaker-threshold", "0"),
    ("--breaker-cooldown", "0"),
    ("--breaker-cooldown", "601"),
    ("--default-rate-limit", "0"),
    ("--default-rate-limit", "100001"),
    ("--max-in-flight", "0"),
    ("--max-in-flight", "10000000000"),
    ("--queue-size", "0"),
    ("--actor-idle", "-1"),
    ("--actor-idle", "0"),
    ("--secret-grace", "-5"),
    ("--secret-grace", "864000"),
    ("--lease", "0"),
    ("--lease", "nan"),
    ("--max-webhooks-per-type", "0"),
    ("--max-deliveries-per-call", "0"),
    ("--max-watchers", "-1"),
    ("--watcher-send-timeout", "-1"),
    ("--watcher-send-timeout", "0"),
]


@pytest.mark.parametrize(("flag", "value"), OUT_OF_RANGE)
def test_a_numeric_flag_out_of_range_is_refused_at_start(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    line = refusal(capsys, flag, value)
    assert f"argument {flag}: " in line and value in line, line


def test_the_retry_cap_may_not_be_below_the_retry_base(capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(capsys, "--retry-base", "30", "--retry-cap", "10")
    assert "--retry-cap" in line and "--retry-base" in line, line
    args = parse("--retry-base", "0.01", "--retry-cap", "0.01")
    assert args.retry_base == args.retry_cap == 0.01


def test_the_defaults_are_valid_and_those_the_engine_documents() -> None:
    engine = config.from_args(parse()).engine
    documented = EngineConfig()
    assert engine.retry == documented.retry and engine.breaker == documented.breaker
    for name in (
        "default_rate_limit",
        "max_in_flight",
        "queue_size",
        "actor_idle_s",
        "secret_grace_s",
        "lease_s",
        "retention_s",
        "auto_disable_after_s",
        "max_webhooks_per_type",
        "max_deliveries_per_call",
    ):
        assert getattr(engine, name) == getattr(documented, name), name


def test_the_bounds_themselves_are_accepted() -> None:
    """The secret grace goes exactly as far as RotateSecret's own limit, the default rate limit
    as far as a webhook's own."""
    args = parse("--secret-grace", f"{MAX_GRACE_S:g}", "--default-rate-limit", "100000", "--max-attempts", "1")
    assert args.secret_grace == MAX_GRACE_S and args.default_rate_limit == 100000 and args.max_attempts == 1
    assert parse("--secret-grace", "0", "--default-rate-limit", "0.1").secret_grace == 0


#: A bad value in a variable, and what the error must name.
BAD_ENVIRONMENT = [
    ("HOOKD_MAX_ATTEMPTS", "eight", "--max-attempts"),
    ("HOOKD_QUEUE_SIZE", "0", "--queue-size"),
    ("HOOKD_RETRY_BASE", "nan", "--retry-base"),
    ("HOOKD_SECRET_GRACE", "864000", "--secret-grace"),
    ("HOOKD_SYNCHRONOUS", "OFF", "--synchronous"),
    ("HOOKD_LOG_LEVEL", "verbose", "--log-level"),
    ("HOOKD_RETENTION", "forever", "--retention"),
    ("HOOKD_PROTECT_HEALTH", "enabled", "--protect-health"),
    ("HOOKD_AUTH_TOKENS", "a,,b", "--auth-token"),
    ("HOOKD_ALLOW_DESTINATIONS", "10.0.0.0/8, ", "--allow-destination"),
]


@pytest.mark.parametrize(("variable", "value", "flag"), BAD_ENVIRONMENT)
def test_a_bad_environment_variable_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, flag: str
) -> None:
    monkeypatch.setenv(variable, value)
    line = refusal(capsys)
    assert variable in line and f"argument {flag}: " in line, line


def test_help_works_whatever_the_environment_holds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value, _ in BAD_ENVIRONMENT:
        monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        parse("--help")
    assert stopped.value.code == 0
    assert "--max-attempts" in capsys.readouterr().out


def test_a_flag_given_replaces_its_variable_even_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_MAX_ATTEMPTS", "eight")
    monkeypatch.setenv("HOOKD_SYNCHRONOUS", "FULL")
    args = parse("--max-attempts", "3")
    assert args.max_attempts == 3 and args.synchronous == "FULL"


def test_choices_from_the_environment_keep_working_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HOOKD_SYNCHRONOUS=full`` and ``HOOKD_LOG_LEVEL=INFO`` always worked (SQLite and logging
    ignore case): checking choices must not refuse them, and hands on the canonical spelling."""
    monkeypatch.setenv("HOOKD_SYNCHRONOUS", "full")
    monkeypatch.setenv("HOOKD_LOG_LEVEL", "INFO")
    args = parse()
    assert (args.synchronous, args.log_level) == ("FULL", "info")


def test_text_settings_from_the_environment_are_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_LISTEN", "127.0.0.1:6000")
    monkeypatch.setenv("HOOKD_DATABASE", "postgresql://hookd@db/hookd")
    settings = config.from_args(parse())
    assert type(settings.listen) is str and settings.listen == "127.0.0.1:6000"
    assert type(settings.engine.database) is str and settings.engine.database == "postgresql://hookd@db/hookd"


def test_token_entries_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_AUTH_TOKENS", "a, b ,c")
    assert config.from_args(parse()).auth_tokens == ("a", "b", "c")
    assert config.from_args(parse("--auth-token", " d ")).auth_tokens == ("d",)


def test_tokens_on_the_command_line_replace_those_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_AUTH_TOKENS", "leaked,kept")
    assert config.from_args(parse("--auth-token", "kept", "--auth-token", "new")).auth_tokens == ("kept", "new")


def test_destinations_on_the_command_line_replace_those_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_ALLOW_DESTINATIONS", "10.0.0.0/8, erp.internal")
    from_environment = config.from_args(parse()).engine.destinations
    assert from_environment.allow_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert from_environment.allow_hosts == {"erp.internal"}
    replaced = config.from_args(parse("--allow-destination", "127.0.0.1")).engine.destinations
    assert replaced.allow_networks == (ipaddress.ip_network("127.0.0.1/32"),) and not replaced.allow_hosts


@pytest.mark.parametrize("flag", ["--auth-token", "--allow-destination"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_entry_is_refused(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    line = refusal(capsys, flag, value)
    assert f"argument {flag}: " in line and "empty" in line, line


def test_a_refused_token_list_is_not_repeated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKD_AUTH_TOKENS", "s3cret-token,")
    assert "s3cret-token" not in refusal(capsys)


def test_help_shows_no_secret(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_AUTH_TOKENS", "s3cret-token,other-100%-token")
    monkeypatch.setenv("HOOKD_DATABASE", "postgresql://hookd:dbpass@db/hookd?sslpassword=keypass")
    with pytest.raises(SystemExit) as stopped:
        parse("--help")
    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # help wraps lines anywhere
    for secret in ("s3cret-token", "other-100%-token", "dbpass", "keypass"):
        assert secret not in shown
    assert "postgresql://hookd:****@db/hookd?sslpassword=****" in shown
    assert "[HOOKD_AUTH_TOKENS, comma-separated] (default: set, not shown)" in shown


def test_help_shows_a_url_with_percent_signs_as_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKD_DATABASE", "postgresql://ops%40hookd@db/hookd")
    with pytest.raises(SystemExit):
        parse("--help")
    assert "postgresql://ops%40hookd@db/hookd" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("postgresql://hookd:s3cret@db/hookd", "postgresql://hookd:****@db/hookd"),
        ("postgresql://hookd@db/hookd?password=s3cret", "postgresql://hookd@db/hookd?password=****"),
        (
            "postgres://db:5433/hookd?sslmode=verify-full&sslpassword=s3cret&application_name=hookd",
            "postgres://db:5433/hookd?sslmode=verify-full&sslpassword=****&application_name=hookd",
        ),
        ("postgresql://u:one@db/h?%70assword=s3cret", "postgresql://u:****@db/h?%70assword=****"),
        ("postgresql://hookd@db/hookd?sslmode=require", "postgresql://hookd@db/hookd?sslmode=require"),
    ],
)
def test_redact_hides_every_password_of_a_database_url(url: str, logged: str) -> None:
    assert redact(url) == logged


def test_a_token_left_off_the_command_line_opens_nothing(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--auth-token", "new-token", env={"HOOKD_AUTH_TOKENS": "leaked-token"}).start()
    try:
        with pytest.raises(Unauthenticated):
            server.client(token="leaked-token").list_webhooks()
        assert server.client(token="new-token").list_webhooks() is not None
    finally:
        server.stop()
