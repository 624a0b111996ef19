"""Start-up failures an operator can fix, each told in one line rather than a traceback.

The store raises ``StartupError`` itself (from inside the trio guest, so it arrives wrapped in
exception groups); the server adds its own: a port it cannot listen on, TLS files it cannot
use. Anything else that stops hookd from starting is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import grpc

from hookd.engine import StartupError


class CannotServe(StartupError):
    """The server cannot listen where it was asked to, or cannot use its TLS files."""


def startup_failure(error: BaseException) -> StartupError | None:
    """The ``StartupError`` that ``error`` is or holds alone (through exception groups), if any."""
    if isinstance(error, StartupError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return startup_failure(error.exceptions[0])
    return None


def tls_credentials(cert: Path | None, key: Path | None) -> grpc.ServerCredentials | None:
    """Server credentials from PEM files, checked here (grpc only says that it could not bind)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise CannotServe("--tls-cert and --tls-key go together")
    try:
        chain, private = cert.read_bytes(), key.read_bytes()
    except OSError as error:
        flag = "--tls-cert" if Path(error.filename or "") == cert else "--tls-key"
        raise CannotServe(f"{flag} {error.filename}: {error.strerror or error}") from error
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise CannotServe(f"--tls-key {key} is not the key of the certificate in --tls-cert {cert}") from error
        detail = f" ({error.reason})" if error.reason else ""
        raise CannotServe(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its private key{detail}"
        ) from error
    return grpc.ssl_server_credentials([(private, chain)])


def bind_problem(address: str) -> str | None:
    """Why ``host:port`` cannot be listened on, found by trying; None if it can. (grpc only logs
    a line of its own and says that it could not bind.)"""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_server((host.strip("[]"), int(port))):
            return None
    except OSError as error:
        return os.strerror(error.errno) if error.errno else str(error)
    except ValueError:
        return "not a host:port"


def check_address(address: str, flag: str) -> None:
    """``CannotServe`` if ``address`` cannot be listened on, before anything tries for real."""
    problem = bind_problem(address)
    if problem is not None:
        raise CannotServe(f"cannot listen on {address} ({flag}): {problem}")


def listen(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``server`` to ``address``; the bound port. ``CannotServe`` if that fails."""
    check_address(address, "--listen")
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:  # taken between the check and now
        raise CannotServe(f"cannot listen on {address} (--listen): {bind_problem(address) or 'grpc could not bind it'}")
    return port


def bind(listen: str) -> socket.socket:
    """A listening socket for ``host:port`` (port 0 picks a free one); ``CannotServe`` if it cannot."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as error:
        raise CannotServe(f"cannot listen on {listen} (--http-listen): {error.strerror or error}") from error
    except ValueError as error:
        raise CannotServe(f"cannot listen on {listen} (--http-listen): not a host:port") from error
    sock.setblocking(False)
    return sock
