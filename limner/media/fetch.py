"""Fetching client-supplied image URLs without becoming a proxy into the server's own network (SSRF).

Each hop's host is resolved once; if ANY address is loopback, private, link-local, multicast,
reserved, unspecified or otherwise not globally routable (including IPv4 hidden in IPv4-mapped,
6to4, NAT64 and Teredo IPv6 forms), the fetch is refused. The request then connects to the vetted
address itself (URL host rewritten to the IP, original ``Host`` header, TLS SNI and certificate
check against the original name via httpx's ``sni_hostname`` extension), so a DNS answer that
changes between check and connect (DNS rebinding) cannot redirect it. Redirects are followed by
hand, re-checking every hop. Environment proxies are ignored on purpose: a proxy would do its own
resolution and void the check. Full URLs are never logged (query strings may hold secrets).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

import httpx

from limner.core.errors import InvalidImage

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``; the default asks the system resolver via ``loop.getaddrinfo``."""

DEFAULT_MAX_BYTES = 25 * 2**20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "limner-image-fetcher"}
"""``identity``: byte limits then count what the server sends, not what a decompressor inflates."""


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None for a globally routable one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None and (problem := address_problem(embedded)) is not None:
            return problem
        if address.is_site_local:
            return "site-local"
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def safe_url(url: httpx.URL | str) -> str:
    """Scheme, host, port and path only: what may appear in logs and error messages."""
    if isinstance(url, str):
        raw = url
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, TypeError, ValueError):
            return raw.split("?", 1)[0].split("#", 1)[0][:200]
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    if not url.scheme:
        return path
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{path}"


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for ``host``, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class UnsafeHost(Exception):
    """Why a URL's host may not be connected to. ``address`` is the refused address, if one was; ``host``
    the name that did not resolve, if that was it; neither: the URL has no host."""

    def __init__(self, reason: str, *, host: str = "", address: IPAddress | None = None) -> None:
        super().__init__(reason)
        self.reason, self.host, self.address = reason, host, address


async def vetted_addresses(url: httpx.URL, resolver: Resolver, *, allow_private: bool) -> list[str]:
    """Every address ``url``'s host stands for (itself, when it is one), each globally routable unless
    ``allow_private``: what image fetches and webhook deliveries may connect to, or ``UnsafeHost``."""
    host = url.raw_host.decode("ascii")
    if not host:
        raise UnsafeHost("not a valid URL (no host)")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(address) for address in await resolver(host, port)]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise UnsafeHost(f"could not resolve host {host}", host=host) from None
    if not allow_private:
        for address in addresses:
            if (problem := address_problem(address)) is not None:
                raise UnsafeHost(f"address {address} is {problem}", address=address)
    return [str(address) for address in addresses]


class _Borrowed(httpx.AsyncBaseTransport):
    """Lends an injected transport to a short-lived client without letting the client close it."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class ImageFetcher:
    """Downloads one image over http(s) with address checks, a size cap and an overall deadline.

    ``resolver`` and ``transport`` are seams for tests (and for deployments with their own DNS).
    Each hop uses a fresh connection: pooled connections are keyed by IP, and a connection whose
    certificate was checked for one host name must not carry a request for another.
    """

    def __init__(
        self,
        allow_private: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 10.0,
        max_redirects: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._transport = transport
        self._resolver: Resolver = resolver or system_resolver
        self._ssl_context: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        """Nothing pooled to release (each hop has its own connection); an injected transport stays its owner's."""
        return None

    async def fetch(self, url: str, label: str, *, param: str | None = None) -> bytes:
        """The body of ``url``; every failure is ``InvalidImage`` naming ``label`` and the reason."""
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise InvalidImage(f"{label}: not a valid URL", param=param) from None
        if current.scheme not in ("http", "https"):
            raise InvalidImage(f"{label}: unsupported URL scheme {current.scheme!r}; use http or https", param=param)
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(self.max_redirects + 1):
                    result = await self._hop(current, label, param)
                    if isinstance(result, bytes):
                        return result
                    current = result
        except TimeoutError:
            raise self._failed(label, current, f"timed out after {self.timeout:g}s", param) from None
        raise self._failed(label, current, f"more than {self.max_redirects} redirects", param)

    @staticmethod
    def _failed(label: str, url: httpx.URL, reason: str, param: str | None) -> InvalidImage:
        return InvalidImage(f"{label}: could not fetch {safe_url(url)}: {reason}", param=param)

    async def _vetted_addresses(self, url: httpx.URL, label: str, param: str | None) -> list[str]:
        try:
            return await vetted_addresses(url, self._resolver, allow_private=self.allow_private)
        except UnsafeHost as unsafe:
            if unsafe.host:  # did not resolve
                raise self._failed(label, url, unsafe.reason, param) from None
            if unsafe.address is not None:
                logger.info("refused to fetch %s for %s: %s", safe_url(url), label, unsafe.reason)
                raise InvalidImage(
                    f"{label}: refusing to fetch {safe_url(url)}: {unsafe.reason}", param=param
                ) from None
            raise InvalidImage(f"{label}: {unsafe.reason}", param=param) from None

    async def _hop(self, url: httpx.URL, label: str, param: str | None) -> bytes | httpx.URL:
        """Fetch one URL: its body, or the next URL when it redirects."""
        addresses = await self._vetted_addresses(url, label, param)
        for index, address in enumerate(addresses):
            try:
                return await self._request(url, address, label, param)
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise self._failed(label, url, "could not connect", param) from None
            except httpx.TimeoutException:
                raise self._failed(label, url, f"timed out after {self.timeout:g}s", param) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                logger.info("fetching %s for %s failed: %r", safe_url(url), label, exc)
                raise self._failed(label, url, f"connection error ({type(exc).__name__})", param) from None
        raise AssertionError("unreachable: _vetted_addresses never returns an empty list")

    def _client(self) -> httpx.AsyncClient:
        transport: httpx.AsyncBaseTransport
        if self._transport is not None:
            transport = _Borrowed(self._transport)
        else:
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            transport = httpx.AsyncHTTPTransport(verify=self._ssl_context, retries=0)
        return httpx.AsyncClient(transport=transport, timeout=self.timeout, follow_redirects=False, trust_env=False)

    async def _request(self, url: httpx.URL, address: str, label: str, param: str | None) -> bytes | httpx.URL:
        target = url.copy_with(host=address)
        headers = {**_HEADERS, "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        logger.debug("fetching %s (%s) for %s", safe_url(url), address, label)
        async with (
            self._client() as client,
            client.stream("GET", target, headers=headers, extensions=extensions) as response,
        ):
            status = response.status_code
            if status in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise self._failed(label, url, f"HTTP {status} without a Location header", param)
                try:
                    following = url.join(location).copy_with(fragment=None)
                except (httpx.InvalidURL, TypeError, ValueError):
                    raise self._failed(label, url, "redirected to an invalid URL", param) from None
                if following.scheme not in ("http", "https"):
                    raise self._failed(label, url, f"redirected to unsupported scheme {following.scheme!r}", param)
                return following
            if not 200 <= status < 300:
                raise self._failed(label, url, f"HTTP {status}", param)
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise self._failed(label, url, f"unsupported Content-Encoding {encoding!r}", param)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._failed(label, url, f"{declared} bytes exceeds the {self.max_bytes}-byte limit", param)
            body = bytearray()
            async for chunk in response.aiter_bytes():  # identity only (checked above): the bytes as sent
                body += chunk
                if len(body) > self.max_bytes:
                    raise self._failed(label, url, f"response exceeds the {self.max_bytes}-byte limit", param)
            return bytes(body)
