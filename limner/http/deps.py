"""Everything a handler needs lives on ``app.state.limner``; these aliases make a signature its wiring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from limner.core.service import ImageService
from limner.engines.catalog import Catalog
from limner.media.inputs import ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import MediaStore
from limner.settings import Settings


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    store: MediaStore
    signer: UrlSigner
    loader: ImageLoader
    service: ImageService
    started: int
    """Unix time the app was built; reported as the models' creation time."""


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.limner
    return state


def get_consumer(request: Request) -> str:
    """The authenticated consumer's name; until accounts exist every caller is the local consumer."""
    return getattr(request.state, "consumer", "local")


StateDep = Annotated[AppState, Depends(get_state)]
ConsumerDep = Annotated[str, Depends(get_consumer)]
