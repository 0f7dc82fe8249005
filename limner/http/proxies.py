"""Where a request came from and how, as far as this server can tell: the connection's own peer and
scheme, and what a proxy says about its client only when that proxy is one of ``LIMNER_TRUSTED_PROXIES``.

Under ``limner serve`` uvicorn already rewrites a trusted proxy's request (``forwarded_allow_ips``: the
client from ``X-Forwarded-For``, the scheme from ``X-Forwarded-Proto``); the same rule is applied here
for servers that do not, so the answer never depends on which server runs the app. The origin check
(``guards.OriginGuard``) and the plain-HTTP token rule (``transport``) both ask these questions.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

SECURE_SCHEMES = frozenset({"https", "wss"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
PROXY_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"forwarded", b"x-real-ip"})
"""Headers a proxy adds: a request that carries one was relayed, whatever its peer."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in proxies)


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None  # a Unix socket, a test client's name
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def trusted(address: str | None, proxies: Sequence[str]) -> bool:
    """Whether ``address`` is one of the proxies (addresses or networks) whose headers are believed."""
    ip = _ip(address)
    return ip is not None and any(ip in network for network in _networks(tuple(proxies)))


def peer(scope: Scope) -> str | None:
    """The address of the connection's other end (after the server's own trusted-proxy rewrite)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _last(scope: Scope, name: bytes) -> str:
    """The last value of a header (the one the nearest proxy added), lowercased; '' when absent."""
    found = ""
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            found = value.decode("latin-1")
    return found.split(",")[-1].strip().lower()


def scheme(scope: Scope, proxies: Sequence[str]) -> str:
    """The scheme the client used: the connection's, or ``https`` when a trusted proxy says so."""
    own: str = scope.get("scheme", "http")
    if own not in SECURE_SCHEMES and _last(scope, b"x-forwarded-proto") == "https" and trusted(peer(scope), proxies):
        return "https"
    return own


def from_this_machine(scope: Scope) -> bool:
    """A loopback peer and no proxy's headers: the request never crossed a network."""
    ip = _ip(peer(scope))
    if ip is None or not ip.is_loopback:
        return False
    return not any(key.lower() in PROXY_HEADERS for key, _ in scope.get("headers") or [])
