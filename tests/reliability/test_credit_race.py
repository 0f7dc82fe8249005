"""A credit race in every dialect: many requests at once against a balance that covers only some of
them. Exactly as many succeed as the balance pays for, the rest get that dialect's own
insufficient-credits answer, the balance ends at zero (never below), and the ledger adds up."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Response
from sqlalchemy import func, select

from limner.accounts.models import LedgerEntry, Reservation
from limner.core.errors import InsufficientCredits
from limner.dialects import aiml, imagineart, milady, openai
from limner.settings import Settings
from tests.accounts.helpers import balance, make_app, provision
from tests.support.accounts import bearer
from tests.support.live_server import live_server

BALANCE = 8
RACERS = 24


@dataclass(frozen=True)
class Dialect:
    name: str
    path: str
    send: Callable[[httpx.AsyncClient, str], Any]
    render: Callable[[InsufficientCredits, str], Response]
    code_of: Callable[[httpx.Response], str]


def nested(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def flat(response: httpx.Response) -> str:
    code: str = response.json()["code"]
    return code


def json_post(body: dict[str, Any]) -> Callable[[httpx.AsyncClient, str], Any]:
    return lambda client, path: client.post(path, json=body)


DIALECTS = [
    Dialect(
        "openai",
        "/v1/images/generations",
        json_post({"prompt": "a cat", "size": "256x256", "response_format": "b64_json"}),
        openai.render_error,
        nested,
    ),
    Dialect("aigne", "/api/images/generations", json_post({"prompt": "a cat"}), openai.render_error, nested),
    Dialect(
        "aiml",
        "/v1/generation/images",
        json_post({"model": "image-gen.pro-1.0", "prompt": "a cat", "response_format": "b64_json"}),
        aiml.render_error,
        nested,
    ),
    Dialect("milady", "/api/v1/generate-image", json_post({"prompt": "a cat"}), milady.render_error, flat),
    Dialect(
        "imagineart",
        "/v1/images/generations",
        lambda client, path: client.post(path, data={"prompt": "a cat", "resolution": "1K"}),
        imagineart.render_error,
        nested,
    ),
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])
def test_racing_requests_never_overdraw_in_any_dialect(priced: Settings, dialect: Dialect) -> None:
    token = provision(priced, "alice", balance=BALANCE)
    app = make_app(priced)
    refused = dialect.render(InsufficientCredits("short", required=1.0, balance=0.0), "r")

    async def race(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=RACERS)
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=120, limits=limits) as client:
            return await asyncio.gather(*(dialect.send(client, dialect.path) for _ in range(RACERS)))

    with live_server(app) as url:
        responses = asyncio.run(race(url))
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: BALANCE, refused.status_code: RACERS - BALANCE}, statuses
    expected_code = dialect.code_of(httpx.Response(refused.status_code, content=bytes(refused.body)))
    assert {dialect.code_of(r) for r in responses if r.status_code != 200} == {expected_code}
    assert balance(app, "alice") == 0
    db = app.state.limner.accounts.db
    try:
        with db.read() as session:
            assert session.scalar(select(func.sum(LedgerEntry.delta))) == 0
            assert set(session.scalars(select(Reservation.state))) == {"committed"}
            assert session.scalar(select(func.count()).where(LedgerEntry.kind == "charge")) == BALANCE
    finally:
        db.dispose()
