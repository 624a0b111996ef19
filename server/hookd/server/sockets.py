"""Shutting down one client's TCP connection, found by its peer address.

grpc.aio gives a server no way to cancel one call or to close one connection. A server stream
whose client stops granting HTTP/2 flow-control window can then never end: its pending message
and the status after it both wait for window, and grpc keeps the call (and its message) until
the connection closes. Keepalive does not notice, since such a client still answers pings.

So, as a last resort, hookd finds the socket of that connection among its own file descriptors
(by the peer address grpc reports and the local port it listens on) and shuts it down. grpc
then sees the connection fail, cancels its calls and frees them. The descriptor itself stays
grpc's: it is shut down, never closed, so it cannot be reused behind grpc's back.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import urllib.parse

log = logging.getLogger("hookd.server")

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _normal(host: str, port: int) -> Address:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address, port


def peer_address(peer: str) -> Address | None:
    """The (address, port) of a grpc peer string: ``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``
    (sometimes percent-encoded); None for anything else (a Unix socket...)."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return _normal(host.strip("[]"), int(port))
    except ValueError:
        return None


def _descriptors() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(folder)]
        except OSError:
            continue
    return []


def _matches(fd: int, peer: Address, local_port: int) -> bool:
    """Whether ``fd`` is the TCP connection from ``peer`` to ``local_port``. The socket object
    only borrows the descriptor: it is detached, never closed."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket, or closed meanwhile
        return False
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        host, port = sock.getpeername()[:2]
        return _normal(host, port) == peer and sock.getsockname()[1] == local_port
    except (OSError, ValueError):  # not connected, or not an IP socket after all
        return False
    finally:
        sock.detach()


def shut_down_connection(peer: str, local_port: int) -> bool:
    """Shut down the connection grpc calls ``peer`` on ``local_port``; whether one was found."""
    address = peer_address(peer)
    if address is None:
        return False
    for fd in _descriptors():
        if _matches(fd, address, local_port):
            borrowed = socket.socket(fileno=fd)
            try:
                borrowed.shutdown(socket.SHUT_RDWR)
            except OSError:
                return False
            finally:
                borrowed.detach()
            return True
    return False
