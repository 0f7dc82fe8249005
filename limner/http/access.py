"""Which models a consumer sees: every dialect's model listing shows only those it may use.

A consumer with an allow-list (``limner consumers access``) sees the catalog ids and aliases of the models
on it; asking for another answers as for a model that does not exist (the accounting gate checks it)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from limner.core.errors import ModelNotFound
from limner.http.deps import get_consumer, get_state

Visible = Callable[[str], bool]


def everything(name: str) -> bool:
    return True


async def visible_models(request: Request) -> Visible:
    """A test of model names (ids or aliases): True for the ones the request's consumer may use."""
    state = get_state(request)
    access = (await state.accounts.policy(get_consumer(request))).access
    if access.models is None:
        return everything

    def visible(name: str) -> bool:
        try:
            return access.allows_model(state.catalog.resolve(name).id)
        except ModelNotFound:
            return False

    return visible


async def check_visible(request: Request, name: str) -> None:
    """``ModelNotFound`` for a model the consumer may not use, as for one that does not exist."""
    visible = await visible_models(request)
    if not visible(name):
        state = get_state(request)
        raise ModelNotFound(name, [known for known in state.service.model_names() if visible(known)])
