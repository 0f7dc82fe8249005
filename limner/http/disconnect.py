"""Cancel a request's work when its client goes away.

uvicorn does not cancel a handler whose client disconnected; it only answers ``http.disconnect`` on
the next ``receive()``. This middleware runs the app in a task and, once the app has read the whole
request body, listens for that message itself: a disconnect before the response is complete cancels
the task. The ``CancelledError`` then unwinds through ``ImageService`` (which refunds the credits it
reserved and records the request as 499) and through the engine call. Messages the app asks for
after the body (Starlette's streaming responses wait for the disconnect too) are passed on.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Message, Receive, Scope, Send

from limner.http.asgi import HttpMiddleware


class CancelOnDisconnectMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_read = asyncio.Event()
        after_body: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        response_done = False

        async def wrapped_receive() -> Message:
            if body_read.is_set():
                return await asyncio.shield(after_body)
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                if message["type"] == "http.disconnect" and not after_body.done():
                    after_body.set_result(message)
                body_read.set()
            return message

        async def wrapped_send(message: Message) -> None:
            nonlocal response_done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, wrapped_receive, wrapped_send))

        async def watch() -> None:
            await body_read.wait()
            if not after_body.done():
                message = await receive()
                if not after_body.done():
                    after_body.set_result(message)
            if after_body.result()["type"] == "http.disconnect" and not response_done:
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled() or not (after_body.done() and after_body.result()["type"] == "http.disconnect"):
                raise  # we were cancelled from outside (shutdown), not by a departed client
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
