"""Charge a request only once its response has been sent (see ``limner.service.accounting``).

``SettleAfterResponse`` gives each HTTP request a ``Delivery``; the accounting gate defers the commit
of a successful run into it instead of committing when the run ends. When the app is done, the
deferred settlements run: committed if the response's last body message went out with a status
below 400, refunded (usage status 499) if the response failed, was cut short, or the client left
first. So a process killed while rendering or writing a response never charges for it; its hold is
refunded by the next start's (or any replica's) recovery.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from limner.http.asgi import HttpMiddleware, ResponseWatch
from limner.service.accounting import Delivery, delivery_var


class SettleAfterResponse(HttpMiddleware):
    """Must wrap ``CancelOnDisconnectMiddleware``, whose task inherits the ``Delivery``."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivery = Delivery()
        token = delivery_var.set(delivery)
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            delivery_var.reset(token)
            settling = asyncio.ensure_future(delivery.settle(watch.complete and watch.status < 400))
            try:
                await asyncio.shield(settling)
            except asyncio.CancelledError:
                await settling  # shutting down: still settle what this request held, then stop
                raise
