"""Start-up failures an operator can fix: one clear line on stderr and exit status 1, no traceback;
a setting out of range is argparse's one-line usage error, exit status 2.

Each case runs the real ``hookd serve``. Root ignores file modes, so as root the server runs
without the capabilities that let it (``setpriv``): it then meets the modes as their owner does.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

#: Capabilities that let root read and write whatever the file modes say.
OVERRIDES = "-dac_override,-dac_read_search,-fowner"


def hookd_serve(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hookd.server", "serve", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file modes cannot be tested")
        command = [setpriv, "--inh-caps=-all", f"--bounding-set={OVERRIDES}", "--", *command]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield taken.getsockname()[1]


def database_args(path: Path) -> list[str]:
    return ["--listen", "127.0.0.1:0", "--database", str(path)]


def read_only_database(workdir: Path) -> list[str]:
    path = workdir / "hookd.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    path.chmod(0o444)
    return database_args(path)


def read_only_folder(workdir: Path) -> list[str]:
    (workdir / "data").mkdir(mode=0o500)
    return database_args(workdir / "data" / "hookd.db")


def folder_without_access(workdir: Path) -> list[str]:
    (workdir / "data").mkdir(mode=0o000)
    return database_args(workdir / "data" / "hookd.db")


def corrupt_database(workdir: Path) -> list[str]:
    (workdir / "hookd.db").write_bytes(os.urandom(8192))
    return database_args(workdir / "hookd.db")


def database_is_a_folder(workdir: Path) -> list[str]:
    (workdir / "hookd.db").mkdir()
    return database_args(workdir / "hookd.db")


def tls_files(workdir: Path, cert: bytes, key: bytes) -> list[str]:
    (workdir / "cert.pem").write_bytes(cert)
    (workdir / "key.pem").write_bytes(key)
    return ["--listen", "127.0.0.1:0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"]


def tls_missing(workdir: Path) -> list[str]:
    args = tls_files(workdir, b"", b"")
    (workdir / "key.pem").unlink()
    return args


def tls_not_pem(workdir: Path) -> list[str]:
    return tls_files(workdir, b"not a certificate\n", b"not a key\n")


def tls_key_of_another_certificate(workdir: Path) -> list[str]:
    ca = trustme.CA()
    one, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    return tls_files(workdir, one.cert_chain_pems[0].bytes(), other.private_key_pem.bytes())


def port_file_in_missing_folder(workdir: Path) -> list[str]:
    return [*database_args(workdir / "hookd.db"), "--port-file", str(workdir / "missing" / "port")]


def port_file_is_a_folder(workdir: Path) -> list[str]:
    (workdir / "port").mkdir()
    return [*database_args(workdir / "hookd.db"), "--port-file", str(workdir / "port")]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "read-only database": (read_only_database, "cannot open database"),
    "read-only folder": (read_only_folder, "cannot open database"),
    "folder without access": (folder_without_access, "cannot open database"),
    "corrupt database": (corrupt_database, "cannot open database"),
    "database is a folder": (database_is_a_folder, "cannot open database"),
    "TLS file missing": (tls_missing, "--tls-key key.pem"),
    "TLS files not PEM": (tls_not_pem, "--tls-cert cert.pem"),
    "TLS key of another certificate": (tls_key_of_another_certificate, "--tls-key key.pem"),
    "port file in a missing folder": (port_file_in_missing_folder, "--port-file"),
    "port file is a folder": (port_file_is_a_folder, "--port-file"),
}


def assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("hookd: ")]
    assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1], result.stderr[-3000:]
    assert errors[0].startswith("hookd: error: ") and expected in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_start_up_failure_is_one_clear_line(tmp_path: Path, case: str) -> None:
    prepare, expected = CASES[case]
    try:
        line = assert_one_clear_line(hookd_serve(tmp_path, *prepare(tmp_path)), expected)
    finally:
        for folder in tmp_path.iterdir():  # let pytest clean up after the unreadable folders
            if folder.is_dir():
                folder.chmod(0o700)
    if "database" in case:
        assert str(tmp_path) in line


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
def test_a_port_in_use_is_one_clear_line(tmp_path: Path, busy_port: int, flag: str) -> None:
    args = ["--listen", "127.0.0.1:0", "--database", str(tmp_path / "hookd.db"), flag, f"127.0.0.1:{busy_port}"]
    line = assert_one_clear_line(hookd_serve(tmp_path, *args), f"127.0.0.1:{busy_port}")
    assert "in use" in line and flag in line


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--default-rate-limit", "0"], {}, "argument --default-rate-limit: 0 is out of range"),
        (["--queue-size", "0"], {}, "argument --queue-size: 0 is out of range"),
        ([], {"HOOKD_MAX_ATTEMPTS": "eight"}, "HOOKD_MAX_ATTEMPTS"),
        ([], {"HOOKD_LOG_LEVEL": "verbose"}, "HOOKD_LOG_LEVEL"),
    ],
)
def test_a_bad_setting_is_one_usage_error(tmp_path: Path, args: list[str], env: dict[str, str], expected: str) -> None:
    """Refused before anything starts, never a traceback nor a server that cannot deliver."""
    result = hookd_serve(tmp_path, *database_args(tmp_path / "hookd.db"), *args, env=env)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "serving" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.splitlines()[-1]
    assert last.startswith("hookd serve: error: ") and expected in last, last
