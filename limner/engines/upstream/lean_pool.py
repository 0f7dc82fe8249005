"""httpcore's connection pool with its bookkeeping linear in the pooled connections: the one place limner
builds on another library's internals, kept to this module.

httpcore re-plans the whole pool at each request's start and end in a way that grows with the square of
the pooled connections (for every idle one it counts them all again, and it lists every available and
every idle one for each queued request): at 64 pooled connections, thousands of method calls per request,
measured as a third of a gateway's throughput at 64 concurrent requests. ``LeanPool`` makes the same
decisions, in the same order, in one pass, and asks only the connection it is about to hand out whether
it expired. It overrides httpcore's private planning method and reads the pool's private lists, so
httpcore is pinned below its next minor version in ``pyproject.toml``, and ``tests/engines/upstream/
test_transport.py`` checks that it still decides as httpcore does (and says what to do when it does not).
Everything else (TLS, timeouts, errors, HTTP/1.1) is httpcore's, unchanged.
"""

from __future__ import annotations

import httpcore

PRIVATE_SEAM = ("_assign_requests_to_connections", "_close_connections", "_connections", "_requests")
"""What ``LeanPool`` relies on inside ``httpcore.AsyncConnectionPool``."""


def seam_fits() -> bool:
    """Whether httpcore still has what ``LeanPool`` overrides and reads."""
    pool = httpcore.AsyncConnectionPool()
    return all(hasattr(pool, name) for name in PRIVATE_SEAM)


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, its bookkeeping linear in the pooled connections (the decisions are httpcore's)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        connections = self._connections
        # Drop closed connections, and close idle ones while more are pooled than are kept alive.
        remaining = len(connections)
        kept = []
        for connection in connections:
            if connection.is_closed():
                remaining -= 1
            elif connection.is_idle() and remaining > self._max_keepalive_connections:
                remaining -= 1
                closing.append(connection)
            else:
                kept.append(connection)
        connections[:] = kept
        # Give each queued request the first available connection that has not expired, else a new one
        # (closing an idle one at the limit).
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            found = self._available(origin, closing)
            if found is None:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees up
                    connections.remove(idle)
                    closing.append(idle)
                found = self.create_connection(origin)
                connections.append(found)
            pool_request.assign_to_connection(found)
        return closing

    async def _close_connections(self, closing: list[httpcore.AsyncConnectionInterface]) -> None:
        if closing:  # httpcore shields an empty loop from cancellation too: twice per request
            await super()._close_connections(closing)

    def _available(
        self, origin: httpcore.Origin, closing: list[httpcore.AsyncConnectionInterface]
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first pooled connection that can take a request to ``origin`` now; expired ones met on the
        way (the provider closed them, or their keep-alive ran out) are moved to ``closing``."""
        connections = self._connections
        index = 0
        while index < len(connections):
            connection = connections[index]
            if connection.can_handle_request(origin) and connection.is_available():
                if not connection.has_expired():
                    return connection
                del connections[index]
                closing.append(connection)
                continue
            index += 1
        return None
