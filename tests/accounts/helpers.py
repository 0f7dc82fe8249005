"""Shared by the accounts tests: apps with a broken engine, provisioned consumers, readers of the ledger."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from limner.accounts import credits, tokens
from limner.accounts.models import UsageRecord, to_micros
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.settings import Settings
from tests.support.accounts import bearer
from tests.support.fakes import factories, raising


def make_app(settings: Settings) -> FastAPI:
    """An app whose catalog's ``broken`` model fails every request."""
    return create_app(settings, factories=factories(broken=raising(RuntimeError("the GPU fell over"))))


def provision(
    settings: Settings, name: str, balance: float | None = None, *, rpm: int | None = None, ipm: int | None = None
) -> str:
    """A consumer with a token (and a balance when given), as an operator would set it up; the token."""
    accounts = Accounts.open(settings)
    try:
        token = tokens.create_token(accounts.db, name, rpm=rpm, ipm=ipm).token
        if balance is not None:
            credits.grant(accounts.db, name, to_micros(balance))
        return token
    finally:
        accounts.db.dispose()


def usage_rows(app: FastAPI) -> list[UsageRecord]:
    """Every usage row, after writing the ones the server still batches."""
    app.state.limner.accounts.flush_usage()
    db = app.state.limner.accounts.db
    with db.read() as session:
        return list(session.scalars(select(UsageRecord).order_by(UsageRecord.id)))


def balance(app: FastAPI, name: str) -> int | None:
    return credits.balance(app.state.limner.accounts.db, name)


def generate(url: str, token: str, **body: object) -> httpx.Response:
    """An OpenAI JSON generation (small, base64) with ``token``."""
    payload = {"prompt": "a cat", "model": "pattern", "size": "64x64", "response_format": "b64_json", **body}
    return httpx.post(url + "/v1/images/generations", json=payload, headers=bearer(token), timeout=30)
