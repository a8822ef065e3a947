"""Where webhooks may go: public internet addresses, and the networks an operator allows.

A station head names a webhook's URL; notify's process makes the call from inside the
city's network. Without a guard a head could have notify call its own services, the
database, a cloud's metadata service (169.254.169.254) or anything on the private
network, and read what answered from the delivery's error (a port scanner). So a URL's
host must be, or resolve to, only *global* addresses: none that is loopback, private,
link-local, multicast, unspecified, reserved, shared (100.64.0.0/10), benchmarking,
documentation, or an internal IPv4 address wrapped in IPv6 (IPv4-mapped, 6to4, NAT64).
The table below is explicit where Python's ``ipaddress`` flags differ between versions,
and the flags catch the rest (``is_global`` last).

Every spelling of an address is read the way the operating system reads it when it
connects: the host goes through ``getaddrinfo`` (numeric forms like ``2130706433``,
``127.1``, ``0x7f.1`` or ``0177.0.0.1`` without any lookup), and the addresses it gives
are what is checked, so no spelling can differ between the check and the connection.
The URL is parsed by the HTTP client's own parser (httpx), also at registration.

The operator may allow networks (``CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS``), each
optionally with a port: ``127.0.0.1:8005`` allows the sandbox's webhook receiver and no
other service on the machine, ``10.20.0.0/16`` a whole integration network, ``[::1]:8005``
or ``fd00::/8`` IPv6. A port matters on loopback, where every local service listens.

Checked at registration (:func:`check_url`) and again at every connection
(``channels/pinned.py``): names may resolve differently later (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: a name's addresses as text, in the order to try them.
Raises :class:`LookupFailed` (or ``OSError``) when the name has none."""

PUBLIC_ONLY = "webhooks go only to addresses on the public internet (只能推送到公网地址)"

_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
    ("shared (carrier-grade NAT)", ("100.64.0.0/10",)),
    ("benchmarking", ("198.18.0.0/15", "2001:2::/48")),
    (
        "documentation",
        ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
    ),
    ("protocol-assignment", ("192.0.0.0/24", "2001::/23")),
    ("local NAT64", ("64:ff9b:1::/48",)),
    ("6to4", ("2002::/16",)),
    ("reserved", ("240.0.0.0/4", "100::/64", "5f00::/16")),
)
"""Refused whatever the Python version says: (kind, networks). 6to4 is deprecated
(RFC 7526) and wraps an IPv4 address, so it is refused whole."""

_TABLE: tuple[tuple[str, IPNetwork], ...] = tuple(
    (kind, ipaddress.ip_network(net)) for kind, nets in _KINDS for net in nets
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix: the address is the IPv4 address in its last 32 bits."""

_HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9.])?$")
"""What a host may look like once httpx parsed it (lower case, IDNA as ``xn--``): a name
or a dotted number. Percent signs, zone ids, underscores and spaces are refused."""


class TargetInvalid(ValueError):
    """Not a URL a webhook can be posted to (the message says why, for a person)."""


class AddressRefused(Exception):
    """The host is, or resolves to, an address webhooks may not reach.

    ``reason`` is for the station head (it names no address the head did not write);
    ``detail`` is for the operator's log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class LookupFailed(Exception):
    """The host name did not resolve (or not in time)."""


def address_kind(address: IPAddress) -> str | None:
    """What kind of internal address ``address`` is, or None for a global one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = address_kind(address.ipv4_mapped)
            return f"IPv4-mapped {inner}" if inner else "IPv4-mapped"
        if address in _NAT64:
            inner = address_kind(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"NAT64 {inner}" if inner else None
    for kind, network in _TABLE:
        if address.version == network.version and address in network:
            return kind
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("non-global", not address.is_global),
    ):
        if flag:
            return kind
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class AllowedNetwork:
    """A network the operator lets webhooks reach, on one port or on all."""

    network: IPNetwork
    port: int | None = None

    def admits(self, address: IPAddress, port: int) -> bool:
        """Whether a connection to ``address``:``port`` is allowed by this entry."""
        return (
            address.version == self.network.version
            and address in self.network
            and (self.port is None or self.port == port)
        )

    def __str__(self) -> str:
        net = str(self.network)
        if self.port is None:
            return net
        return f"{net}:{self.port}" if self.network.version == 4 else f"[{net}]:{self.port}"

    @classmethod
    def endpoint(cls, url: str) -> AllowedNetwork:
        """Exactly the address and port of ``url`` (an IP literal: a local receiver's)."""
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return cls(ipaddress.ip_network(parsed.host), port)

    @classmethod
    def parse(cls, text: str) -> AllowedNetwork:
        """``127.0.0.1:8005``, ``10.0.0.0/8``, ``[::1]:8005``, ``[fd00::/8]``, ``fd00::/8``."""
        entry = text.strip()
        port: str | None = None
        if entry.startswith("["):
            net, sep, rest = entry[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r}: write IPv6 with a port as [address/prefix]:port")
            port = rest[1:] if rest else None
        elif entry.count(":") == 1:  # IPv4 with a port
            net, port = entry.split(":")
        else:
            net = entry
        try:
            network = ipaddress.ip_network(net.strip())
        except ValueError as err:
            raise ValueError(f"{text!r} is not a network: {err}") from None
        number: int | None = None
        if port is not None:
            if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
            number = int(port)
        return cls(network, number)


def parse_allowed(value: object) -> tuple[AllowedNetwork, ...]:
    """The setting's entries, separated by commas or spaces (or a list of them)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[object] = re.split(r"[,\s]+", value)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ValueError("a list of networks, e.g. 127.0.0.1:8005,10.20.0.0/16")
    found = []
    for item in items:
        if isinstance(item, AllowedNetwork):
            found.append(item)
        elif isinstance(item, str) and item.strip():
            found.append(AllowedNetwork.parse(item))
        elif not isinstance(item, str):
            raise ValueError(f"not a network: {item!r}")
    return tuple(found)


@dataclasses.dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which addresses webhooks may connect to: global ones and the allowed networks."""

    allowed: tuple[AllowedNetwork, ...] = ()

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why ``address``:``port`` may not be reached (its kind), or None if it may."""
        if any(entry.admits(address, port) for entry in self.allowed):
            return None
        return address_kind(address)

    def near_miss(self, address: IPAddress) -> bool:
        """Whether ``address`` is on an allowed network, only not on its port (for the
        operator's log: a head is not told what the operator allows)."""
        return any(address in entry.network for entry in self.allowed)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL as the HTTP client reads it."""

    scheme: str
    host: str
    """ASCII (IDNA), lower case: what is resolved, sent as ``Host`` and as TLS SNI."""
    port: int
    """The port connected to (80 or 443 when the URL names none)."""
    url: httpx.URL

    @property
    def display(self) -> str:
        """``scheme://host[:port]``: what texts and logs show of the URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port != default else "")


def parse_target(url: str) -> Target:
    """``url`` read by httpx's parser, or :class:`TargetInvalid` saying what is wrong."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise TargetInvalid("not a valid web address (网址无效)") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetInvalid("must start with https:// (or http://) (须以https://开头)")
    if parsed.userinfo:
        raise TargetInvalid(
            "must not contain a user name or password before '@'; the signature "
            "authenticates each call (网址中不得包含用户名或密码)"
        )
    host = parsed.raw_host.decode("ascii", errors="replace").lower()
    if not host:
        raise TargetInvalid("names no host (网址缺少主机名)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetInvalid("the IPv6 address is not valid (IPv6地址无效)") from None
        if "%" in host:
            raise TargetInvalid("an IPv6 zone (%…) names a local interface (不得指定网络接口)")
    elif len(host) > 253 or not _HOST_NAME.match(host):
        raise TargetInvalid(f"{host!r} is not a host name (主机名无效)")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise TargetInvalid("the port must be from 1 to 65535 (端口无效)")
    return Target(parsed.scheme, host, port, parsed)


def numeric_address(host: str) -> IPAddress | None:
    """The address ``host`` is written as (in any form the system accepts: ``127.1``,
    ``2130706433``, ``0x7f.0.0.1``, ``::ffff:127.0.0.1``), or None if it is a name."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(found[0][4][0]).split("%")[0])


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's ``getaddrinfo`` (one lookup; addresses in the order given)."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as err:
        raise LookupFailed(f"{type(err).__name__}: {err}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in found))


async def resolve(
    host: str, port: int, resolver: Resolver, *, lookup_seconds: float
) -> list[IPAddress]:
    """The addresses to connect to for ``host``: the written one, or the name's, looked
    up once within ``lookup_seconds``. Raises :class:`LookupFailed`."""
    written = numeric_address(host)
    if written is not None:
        return [written]
    try:
        async with asyncio.timeout(lookup_seconds):
            texts = await resolver(host, port)
    except TimeoutError:
        raise LookupFailed(f"no answer within {lookup_seconds:g} s") from None
    except OSError as err:
        raise LookupFailed(f"{type(err).__name__}: {err}") from None
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_address(text.split("%")[0]))
        except ValueError:
            raise LookupFailed(f"the resolver answered {text!r}") from None
    if not addresses:
        raise LookupFailed("no addresses")
    return addresses


def named_refusal(host: str) -> str:
    """Why a name is refused, whether it resolves to no address or to an internal one."""
    return (
        f"{host} does not resolve to a public address; check the name "
        f"(域名无法解析或不是公网地址) — {PUBLIC_ONLY}"
    )


def checked(
    host: str, port: int, addresses: Sequence[IPAddress], policy: EgressPolicy, *, named: bool
) -> None:
    """Refuse (:class:`AddressRefused`) unless every address may be reached.

    A name with one internal address among public ones is refused whole: which one a
    connection would take is not ours to promise."""
    for address in addresses:
        kind = policy.refusal(address, port)
        if kind is None:
            continue
        detail = f"{host} -> {address} ({kind}), port {port}"
        if policy.near_miss(address):
            detail += " (an allowed network, but not this port)"
        if named:
            # Which internal address a name has is the inside's business: not said.
            reason = named_refusal(host)
        else:
            article = "an" if kind[0].lower() in "aeiou" else "a"
            reason = f"{host} is {article} {kind} address ({address}); {PUBLIC_ONLY}"
        raise AddressRefused(reason, detail)


async def check_url(
    url: str,
    policy: EgressPolicy,
    resolver: Resolver = system_resolver,
    *,
    lookup_seconds: float = 5.0,
) -> Target:
    """A subscription's URL, checked as a delivery will check it (registration).

    Raises :class:`TargetInvalid` (not a usable URL) or :class:`AddressRefused` (an
    address webhooks may not reach, or a name that resolves to no public one)."""
    target = parse_target(url)
    try:
        addresses = await resolve(target.host, target.port, resolver, lookup_seconds=lookup_seconds)
    except LookupFailed as err:
        # The same words as for a name resolving inside: which internal names exist
        # is not for a subscriber to learn by trying them.
        raise AddressRefused(named_refusal(target.host), f"{target.host}: {err}") from None
    checked(
        target.host,
        target.port,
        addresses,
        policy,
        named=numeric_address(target.host) is None,
    )
    return target
