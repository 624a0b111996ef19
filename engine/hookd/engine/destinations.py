"""Which destinations hookd may call: scheme rules and the SSRF guard.

A destination whose host is, or resolves to, a loopback, private, link-local (cloud metadata at
169.254.169.254 included), multicast or otherwise reserved address is refused, unless an
allow-list entry names it. The check runs when a webhook is saved and again at every connection,
and the connection goes to the very address that was checked, so a DNS answer that changes
between check and connect (DNS rebinding) gains nothing.

https destinations must present a certificate the system trusts, or one signed by the extra CA
file the operator names (an internal CA), never anything less; plain http is refused unless
allowed, at every connection too (``ConnectionSet``).

Names are looked up in worker threads, and a lookup cannot be interrupted: one abandoned at its
request's timeout keeps its thread until the system resolver gives up (tens of seconds when a
name server does not answer). So lookups have threads of their own (``LOOKUP_THREADS``, not
trio's default limiter, which the store's reads use too), and the requests that want one name
while its lookup runs wait for that lookup instead of starting another: a destination whose name
servers hang holds one thread, not one per request in flight, and the healthy ones find threads
free. Nothing is cached beyond that: each connection is still made to addresses resolved and
checked for it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import outcome
import trio

from hookd.engine.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
#: Threads for name lookups at once. Names whose lookups hang hold one each (until the resolver
#: gives up); the others share the rest.
LOOKUP_THREADS = 32


class DestinationBlocked(Exception):
    """The destination's address is not one hookd may call."""


class DestinationUnresolvable(Exception):
    """The destination's host name did not resolve."""


#: IPv6 forms that carry an IPv4 address in their last 32 bits and may reach it: IPv4-translated
#: (SIIT), IPv4-compatible (deprecated) and the NAT64 well-known prefix.
_EMBEDDING_IPV4 = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0:0/96", "::/96", "64:ff9b::/96"))
#: Local-use NAT64 translates to whatever the operator's network routes: never public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _EMBEDDING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    """Globally reachable unicast. An IPv6 form that embeds an IPv4 address (mapped, translated,
    compatible, NAT64, 6to4) is judged by that IPv4 address, since it may be how it is reached."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64 or address.is_site_local:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _is_public(embedded)
    return address.is_global and not address.is_multicast


def _getaddrinfo(name: bytes) -> list[str]:
    """The addresses the system resolver gives for ``name``, in its order, without repeats.
    Blocks: a lookup thread runs it. Raises OSError."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _numeric(name: bytes) -> list[str] | None:
    """The address a numeric form the resolver reads without DNS stands for (``0177.0.0.1``,
    ``0x7f000001``, ``2130706433``, ``10.1``), at once and with no thread; None for a name."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Lookup:
    """One name's lookup in a thread, shared by every request that wants the name meanwhile."""

    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.addresses: list[str] | None = None
        self.error: BaseException | None = None


class _Lookups:
    """A trio run's lookups in progress, one per name, and the threads they may hold.

    A lookup belongs to no one request: any of those waiting for it may give up (its timeout)
    while the others still want the answer, and its thread ends only when the resolver answers.
    So it is not run by ``trio.to_thread`` in one request's task, but in a thread from trio's cache
    whose answer comes back through the run's token; the thread holds a token of ``threads`` until
    then. Entries leave ``pending`` when their thread ends, or at once if their starter gave up
    before a thread was free: at most ``LOOKUP_THREADS`` plus the requests waiting for a thread.
    """

    def __init__(self) -> None:
        self.threads = trio.CapacityLimiter(LOOKUP_THREADS)
        self.pending: dict[bytes, _Lookup] = {}

    def __repr__(self) -> str:
        return f"<_Lookups pending={len(self.pending)} threads={self.threads.borrowed_tokens}/{LOOKUP_THREADS}>"

    async def addresses(self, name: bytes) -> list[str]:
        """What ``_getaddrinfo`` says for ``name``. Raises what it raises (OSError)."""
        while True:
            lookup = self.pending.get(name)
            if lookup is None:
                lookup = await self._start(name)
            await lookup.done.wait()
            if lookup.error is not None:
                raise lookup.error
            if lookup.addresses is not None:
                return lookup.addresses
            # Its starter gave up waiting for a thread: start it again.

    async def _start(self, name: bytes) -> _Lookup:
        lookup = self.pending[name] = _Lookup()
        try:
            await self.threads.acquire_on_behalf_of(lookup)
        except BaseException:
            del self.pending[name]
            lookup.done.set()  # no answer: whoever waits for it asks again
            raise
        deliver = partial(self._deliver, trio.lowlevel.current_trio_token(), name, lookup)
        trio.lowlevel.start_thread_soon(partial(_getaddrinfo, name), deliver, name="hookd lookup")
        return lookup

    def _deliver(
        self, token: trio.lowlevel.TrioToken, name: bytes, lookup: _Lookup, result: outcome.Outcome[list[str]]
    ) -> None:
        """In the lookup's thread: hand its answer to the run (which may have ended meanwhile)."""
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._finish, name, lookup, result)

    def _finish(self, name: bytes, lookup: _Lookup, result: outcome.Outcome[list[str]]) -> None:
        self.threads.release_on_behalf_of(lookup)
        del self.pending[name]
        try:
            lookup.addresses = result.unwrap()
        except BaseException as error:  # given to every waiter; raising here would end the run
            lookup.error = error
        lookup.done.set()


_LOOKUPS: trio.lowlevel.RunVar[_Lookups] = trio.lowlevel.RunVar("hookd_lookups")


def _lookups() -> _Lookups:
    """This run's lookups (a run's limiter and events cannot serve another run, as in tests)."""
    try:
        return _LOOKUPS.get()
    except LookupError:
        lookups = _Lookups()
        _LOOKUPS.set(lookups)
        return lookups


async def _lookup(name: str) -> list[str]:
    """The addresses of ``name``. Raises OSError, or UnicodeError when it has no IDNA form."""
    encoded = name.encode("ascii") if name.isascii() else name.encode("idna")
    numeric = _numeric(encoded)
    if numeric is not None:
        return numeric
    return await _lookups().addresses(encoded)


def _check_host_name(host: str, field_name: str) -> None:
    """A host name must be one the resolver can be asked about: IDNA-encodable (no empty label, no
    label over 63 characters) and at most 253 characters long. IP literals are not names."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        encoded = host.encode("idna")
    except UnicodeError as error:
        raise InvalidArgument(field_name, f"has an invalid host name: {error}") from error
    if len(encoded.rstrip(b".")) > 253:
        raise InvalidArgument(field_name, "has a host name longer than 253 characters")


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Built once per CA file: loading the system store costs milliseconds, and actors come and go."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


@dataclass(frozen=True)
class DestinationPolicy:
    """``allow_http`` permits plain http; ``allow_networks`` and ``allow_hosts`` open exactly what they name.

    ``ca_file`` is a PEM bundle trusted for https destinations in addition to the system's CAs.
    """

    allow_http: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings for destinations: verification on, system CAs plus ``ca_file``.

        Raises OSError or ssl.SSLError when ``ca_file`` cannot be read or holds no certificate.
        """
        return _tls_context(self.ca_file)

    @classmethod
    def from_entries(cls, entries: list[str], *, allow_http: bool, ca_file: str | None = None) -> DestinationPolicy:
        """Build from configuration entries: CIDRs (``10.0.0.0/8``), addresses or host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(
            allow_http=allow_http, allow_networks=tuple(networks), allow_hosts=frozenset(hosts), ca_file=ca_file or None
        )

    def address_allowed(self, address: IPAddress) -> bool:
        return _is_public(address) or any(address in network for network in self.allow_networks)

    def check_url(self, url: str, field_name: str = "url") -> tuple[str, int]:
        """Validate the URL's form; return (host, port). Raises InvalidArgument naming the field."""
        if not url:
            raise InvalidArgument(field_name, "is required")
        if len(url) > MAX_URL_LENGTH:
            raise InvalidArgument(field_name, f"is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise InvalidArgument(field_name, f"is not a valid URL: {error}") from error
        if parts.scheme not in ("http", "https"):
            raise InvalidArgument(field_name, "must be an absolute http or https URL")
        if parts.scheme == "http" and not self.allow_http:
            raise InvalidArgument(field_name, "must use https (plain http is disabled; see --allow-http)")
        host = parts.hostname
        if not host:
            raise InvalidArgument(field_name, "has no host")
        _check_host_name(host, field_name)
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument(field_name, "must not carry credentials; use auth instead")
        if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
            raise InvalidArgument(field_name, "must not contain whitespace or control characters")
        return host, port or (443 if parts.scheme == "https" else 80)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses of ``host`` that may be called, in resolver order.

        Raises DestinationUnresolvable when the name does not resolve and DestinationBlocked when
        any address it resolves to is not allowed (one bad address taints the name).
        """
        name = host.lower().rstrip(".")
        try:
            literal: IPAddress | None = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if name in self.allow_hosts or self.address_allowed(literal):
                return [str(literal)]
            raise DestinationBlocked(f"address {literal} is not a public address")
        try:
            addresses = await _lookup(name)
        except (OSError, UnicodeError) as error:  # UnicodeError: the name has no IDNA form
            raise DestinationUnresolvable(f"host {host!r} did not resolve: {error}") from error
        if name in self.allow_hosts:
            return addresses
        for address in addresses:
            if not self.address_allowed(ipaddress.ip_address(address)):
                raise DestinationBlocked(f"host {host!r} resolves to {address}, not a public address")
        return addresses

    async def check_destination(self, url: str, field_name: str = "url") -> None:
        """The full check a webhook's URL passes when it is saved.

        A name that does not resolve (yet) is accepted: it reaches no address now, and every
        delivery checks again before it connects.
        """
        host, port = self.check_url(url, field_name)
        with trio.move_on_after(RESOLVE_TIMEOUT_S):
            try:
                await self.resolve(host, port)
            except DestinationBlocked as error:
                raise InvalidArgument(field_name, f"{error} (see --allow-destination)") from error
            except DestinationUnresolvable:
                pass
