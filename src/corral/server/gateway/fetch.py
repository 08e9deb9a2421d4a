"""Fetching an image a client gave by URL, without becoming a proxy into the
cluster's own network (server-side request forgery).

The gateway fetches ``https://`` images itself and hands engines data URIs,
so that no engine ever opens a URL a client chose (llama-server and vLLM
both would). What makes the fetch safe:

- the host name is resolved here, every address it resolves to is checked,
  and the connection goes to a checked address: a name that resolves to
  something public when checked and to ``127.0.0.1`` when connected (DNS
  rebinding) cannot slip through, because there is no second lookup;
- loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
  multicast, reserved and unspecified addresses are refused, IPv4 ones
  hidden in IPv6 (mapped, 6to4, Teredo) included, unless an operator lists
  their network in ``allowed_networks``;
- TLS is verified against the host name (the system's trust store, so
  ``SSL_CERT_FILE`` applies); plain ``http://`` only when allowed;
- redirects are followed by hand, at most ``max_redirects``, and each hop is
  checked like the first;
- no proxy from the environment is used; no credentials in URLs; the answer
  must be 200 with an allowed image content type, at most ``max_bytes``
  (declared or counted), within ``timeout`` seconds overall.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpcore

IMAGE_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
USER_AGENT = b"corral-gateway (image fetch)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(Exception):
    """Why an image URL was not fetched; the message is shown to the client."""


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Networks fetched from even though they are not public."""
    max_redirects: int = 3
    content_types: frozenset[str] = field(default=IMAGE_CONTENT_TYPES)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return None


def address_allowed(ip: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Whether the gateway may connect to ``ip`` to fetch an image."""
    inner = _embedded_ipv4(ip)
    candidates = [ip] if inner is None else [ip, inner]
    for candidate in candidates:
        if any(candidate.version == n.version and candidate in n for n in allowed):
            return True
    return all(c.is_global and not c.is_multicast for c in candidates)


class _Guard:
    """Resolves a host and keeps the addresses the policy allows."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    async def addresses(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise FetchError(f"the host {host} cannot be resolved ({e.strerror})") from e
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refused = [a for a in found if not address_allowed(_ip(a), self.policy.allowed_networks)]
        if refused:
            # One private answer is enough to refuse: which address a client
            # library would pick is not ours to guess.
            raise FetchError(
                f"the host {host} resolves to {refused[0]}, which is not a public address; "
                "the gateway fetches images from public addresses only"
            )
        return found


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self._guard.addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {last}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched from")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class ImageFetcher:
    """Fetches images by URL under a ``FetchPolicy``; one per gateway."""

    def __init__(self, policy: FetchPolicy, ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            network_backend=_GuardedBackend(_Guard(policy)),
            max_connections=64,
            keepalive_expiry=5.0,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """The image's bytes and content type; ``FetchError`` saying why not."""
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._follow(url)
        except TimeoutError:
            raise FetchError(f"no complete answer within {self.policy.timeout:g} s") from None

    async def _follow(self, url: str) -> tuple[bytes, str]:
        for _ in range(self.policy.max_redirects + 1):
            self._check_url(url)
            status, location, result = await self._get(url)
            if location is None:
                if result is None:
                    raise FetchError(f"the server answered HTTP {status}")
                return result
            url = urljoin(url, location)
        raise FetchError(f"more than {self.policy.max_redirects} redirects")

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as e:
            raise FetchError(f"the URL is malformed ({e})") from None
        schemes = ("https", "http") if self.policy.allow_http else ("https",)
        if parts.scheme not in schemes:
            raise FetchError(
                f"only {' and '.join(s + '://' for s in schemes)} image URLs are fetched, "
                f"not {parts.scheme or 'scheme-less'} ones"
            )
        if not parts.hostname:
            raise FetchError("the URL names no host")
        if not url.isascii():
            raise FetchError("the URL has non-ASCII characters (write the host in punycode)")
        if parts.username is not None or parts.password is not None:
            raise FetchError("URLs with credentials are not fetched")

    async def _get(self, url: str) -> tuple[int, str | None, tuple[bytes, str] | None]:
        """One GET: (status, redirect location or None, (body, type) or None)."""
        parts = urlsplit(url)
        headers = [
            (b"Host", parts.netloc.encode()),
            (b"User-Agent", USER_AGENT),
            (b"Accept", ", ".join(sorted(self.policy.content_types)).encode()),
        ]
        limit = self.policy.max_bytes
        try:
            async with self._pool.stream(
                "GET", url, headers=headers, extensions={"timeout": self._timeouts()}
            ) as response:
                status = response.status
                found = dict((k.lower(), v) for k, v in response.headers)
                if status in (301, 302, 303, 307, 308) and b"location" in found:
                    return status, found[b"location"].decode("latin-1"), None
                if status != 200:
                    return status, None, None
                kind = found.get(b"content-type", b"").decode("latin-1")
                kind = kind.split(";", 1)[0].strip().lower()
                if kind not in self.policy.content_types:
                    raise FetchError(
                        f"the content type {kind or '(none)'} is not an image type the "
                        f"gateway accepts ({', '.join(sorted(self.policy.content_types))})"
                    )
                declared = found.get(b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise FetchError(f"the image is {int(declared)} bytes, over the {limit} limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_stream():
                    size += len(chunk)
                    if size > limit:
                        raise FetchError(f"the image is over the {limit}-byte limit")
                    chunks.append(chunk)
                return status, None, (b"".join(chunks), kind)
        except httpcore.ConnectError as e:
            raise FetchError(str(e) or "cannot connect") from None
        except httpcore.TimeoutException:
            raise FetchError(f"no complete answer within {self.policy.timeout:g} s") from None
        except (httpcore.ProtocolError, httpcore.NetworkError, ssl.SSLError) as e:
            raise FetchError(f"the connection failed: {e}") from None
        except httpcore.UnsupportedProtocol as e:
            raise FetchError(str(e)) from None

    def _timeouts(self) -> dict[str, float]:
        t = self.policy.timeout
        return {"connect": t, "read": t, "write": t, "pool": t}
