"""Accounts helpers for any dialect's tests: issue tokens, and check every auth error in an envelope.

    with locked_server(settings) as (url, tokens):          # a live server that requires tokens
        assert_auth_errors(send, code_of, CODES, tokens)     # missing / malformed / unknown / revoked / expired

``send(headers)`` makes the dialect's request with those headers; ``code_of(response)`` reads the
error code out of the dialect's envelope; ``codes`` maps limner's codes to the dialect's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx

from limner.accounts import tokens
from limner.accounts.models import utcnow
from limner.accounts.service import Accounts
from limner.settings import Settings

Send = Callable[[dict[str, str]], httpx.Response]
CodeOf = Callable[[httpx.Response], object]


@dataclass(frozen=True)
class TestTokens:
    __test__ = False  # a fixture's value, not a test class for pytest to collect

    valid: str
    revoked: str
    expired: str
    consumer: str = "alice"


def issue_tokens(settings: Settings, consumer: str = "alice") -> TestTokens:
    """One valid, one revoked and one expired token for ``consumer`` in the settings' database."""
    accounts = Accounts.open(settings)
    try:
        db = accounts.db
        valid = tokens.create_token(db, consumer).token
        revoked = tokens.create_token(db, consumer)
        tokens.revoke_token(db, str(revoked.id))
        expired = tokens.create_token(db, consumer, expires_at=utcnow() + timedelta(seconds=30))
        with db.write() as session:
            row = session.get(tokens.ApiToken, expired.id)
            assert row is not None
            row.expires_at = utcnow() - timedelta(seconds=1)
    finally:
        accounts.db.dispose()
    return TestTokens(valid, revoked.token, expired.token, consumer)


@contextmanager
def locked_server(settings: Settings, consumer: str = "alice") -> Iterator[tuple[str, TestTokens]]:
    """A live server (real HTTP on 127.0.0.1) whose database holds tokens, so every route requires one."""
    from limner.app import create_app
    from tests.support.live_server import live_server

    issued = issue_tokens(settings, consumer)
    with live_server(create_app(settings)) as url:
        yield url, issued


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_cases(issued: TestTokens) -> list[tuple[str, dict[str, str], str]]:
    """(what, headers, limner code) for every way to fail authentication."""
    unknown = tokens.TOKEN_PREFIX + "x" * 43
    return [
        ("no Authorization header", {}, "missing_bearer_token"),
        ("empty Authorization header", {"Authorization": ""}, "missing_bearer_token"),
        ("not a Bearer scheme", {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing_bearer_token"),
        ("Bearer with no token", {"Authorization": "Bearer"}, "missing_bearer_token"),
        ("not a limner token", bearer("sk-not-ours"), "invalid_token"),
        ("unknown token", bearer(unknown), "invalid_token"),
        ("valid token's prefix, wrong rest", bearer(issued.valid[:12] + "y" * 43), "invalid_token"),
        ("revoked token", bearer(issued.revoked), "invalid_token"),
        ("expired token", bearer(issued.expired), "invalid_token"),
    ]


def assert_auth_errors(
    send: Send, code_of: CodeOf, codes: Mapping[str, object], issued: TestTokens, *, status: int = 401
) -> None:
    """Every auth failure answers ``status`` with the dialect's code; the valid token gets through.
    No response ever contains a token."""
    for what, headers, limner_code in auth_cases(issued):
        response = send(headers)
        assert response.status_code == status, f"{what}: {response.status_code} {response.text[:300]}"
        assert code_of(response) == codes[limner_code], f"{what}: {response.text[:300]}"
        for secret in (issued.valid, issued.revoked, issued.expired):
            assert secret not in response.text
    ok = send(bearer(issued.valid))
    assert ok.status_code < 300, ok.text[:300]
    assert issued.valid not in ok.text
