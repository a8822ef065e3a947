"""The webhook channel's network: resolve once, check every address, connect to a
checked one (an ``httpcore`` network backend).

httpcore asks its backend to connect to the URL's host; this backend resolves the host
itself (once per connection), refuses the connection unless every address is allowed by
the :class:`~services.notify.egress.EgressPolicy`, and then opens TCP to one of those
very addresses. The name stays what httpcore uses for TLS (SNI and the certificate
check) and for the ``Host`` header, so nothing changes for the receiver, and a name
that resolves elsewhere a moment later (DNS rebinding) changes nothing for us.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore

from services.notify.egress import EgressPolicy, Resolver, checked, numeric_address, resolve

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, the ones it checked."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver,
        *,
        lookup_timeout: float = 5.0,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.lookup_timeout = lookup_timeout
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` once, check each address, connect to the first that answers.

        Raises :class:`~services.notify.egress.LookupFailed`,
        :class:`~services.notify.egress.AddressRefused`, or httpcore's connect errors."""
        lookup = min(timeout, self.lookup_timeout) if timeout else self.lookup_timeout
        addresses = await resolve(host, port, self.resolver, lookup_seconds=lookup)
        checked(host, port, addresses, self.policy, named=numeric_address(host) is None)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None  # resolve() gives at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a webhook goes over TCP."""
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """httpcore's pause between retries (it makes none here)."""
        await self._inner.sleep(seconds)
