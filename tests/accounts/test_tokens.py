"""Tokens: random, hashed at rest, constant-time verification, several per consumer, revoke, rotate, expire."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from unittest import mock

import pytest
from sqlalchemy import select

from limner.accounts import consumers, tokens
from limner.accounts.models import ApiToken, utcnow
from limner.accounts.service import Accounts
from limner.core.errors import InvalidRequest, NotFound


def test_tokens_are_random_prefixed_and_stored_only_as_hashes(accounts: Accounts) -> None:
    db = accounts.db
    issued = [tokens.create_token(db, "alice") for _ in range(3)]
    assert len({t.token for t in issued}) == 3
    for t in issued:
        assert t.token.startswith("lim_") and len(t.token) == 4 + 43
        assert t.prefix == t.token[:12]
    with db.read() as session:
        rows = session.scalars(select(ApiToken)).all()
    stored = " ".join(f"{r.prefix} {r.token_hash} {r.label}" for r in rows)
    for t in issued:
        assert t.token not in stored
        assert hashlib.sha256(t.token.encode()).hexdigest() in stored


def test_verify_uses_constant_time_comparison(accounts: Accounts) -> None:
    issued = tokens.create_token(accounts.db, "alice")
    digest = hashlib.sha256(issued.token.encode()).hexdigest()
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        principal = tokens.verify_token(accounts.db, issued.token)
    assert principal is not None and principal.consumer == "alice" and principal.token_id == issued.id
    compare.assert_any_call(digest, digest)

    wrong = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert tokens.verify_token(accounts.db, wrong) is None
    assert compare.call_count >= 1, "a near miss is still compared in constant time, never with =="
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert tokens.verify_token(accounts.db, "lim_" + "z" * 43) is None
        assert tokens.verify_token(accounts.db, "something-else") is None
    assert compare.call_count == 2, "unknown prefixes do the same work as known ones"


def test_several_active_tokens_per_consumer_and_revocation_is_immediate(accounts: Accounts) -> None:
    db = accounts.db
    first, second = tokens.create_token(db, "alice"), tokens.create_token(db, "alice")
    assert tokens.verify_token(db, first.token) and tokens.verify_token(db, second.token)
    tokens.revoke_token(db, first.prefix)
    assert tokens.verify_token(db, first.token) is None
    assert tokens.verify_token(db, second.token) is not None
    again = tokens.revoke_token(db, str(first.id))
    assert again.status() == "revoked", "revoking twice is harmless"


def test_rotation_keeps_the_old_token_until_it_is_revoked(accounts: Accounts) -> None:
    db = accounts.db
    old = tokens.create_token(db, "alice", label="phone app")
    new = tokens.rotate_token(db, str(old.id))
    assert new.consumer == "alice" and new.rotated_from_id == old.id and new.token != old.token
    assert tokens.verify_token(db, old.token) is not None, "overlap: both work while clients move"
    assert tokens.verify_token(db, new.token) is not None
    tokens.revoke_token(db, str(old.id))
    assert tokens.verify_token(db, old.token) is None
    assert tokens.verify_token(db, new.token) is not None
    listed = {t.id: t for t in tokens.list_tokens(db, "alice")}
    assert listed[new.id].label == "phone app" and listed[new.id].rotated_from_id == old.id
    with pytest.raises(InvalidRequest):
        tokens.rotate_token(db, str(old.id))


def test_expiry(accounts: Accounts) -> None:
    db = accounts.db
    now = utcnow()
    issued = tokens.create_token(db, "alice", expires_at=now + timedelta(hours=1))
    assert tokens.verify_token(db, issued.token, now) is not None
    assert tokens.verify_token(db, issued.token, now + timedelta(hours=1, seconds=1)) is None
    assert tokens.parse_expiry("30d", now) == now + timedelta(days=30)
    assert tokens.parse_expiry("12h", now) == now + timedelta(hours=12)
    assert tokens.parse_expiry("never", now) is None
    with pytest.raises(InvalidRequest):
        tokens.parse_expiry("2001-01-01", now)
    with pytest.raises(InvalidRequest):
        tokens.parse_expiry("soon", now)


def test_find_by_id_prefix_or_whole_token_never_ambiguous(accounts: Accounts) -> None:
    db = accounts.db
    issued = tokens.create_token(db, "alice")
    with db.read() as session:
        assert tokens.find_token(session, str(issued.id)).id == issued.id
        assert tokens.find_token(session, issued.prefix).id == issued.id
        assert tokens.find_token(session, issued.prefix[:9]).id == issued.id
        assert tokens.find_token(session, issued.token).id == issued.id
        with pytest.raises(NotFound):
            tokens.find_token(session, issued.prefix + "not-the-rest")
        with pytest.raises(NotFound):
            tokens.find_token(session, "999")
        with pytest.raises(InvalidRequest):
            tokens.find_token(session, "lim_")


def test_token_creation_sets_consumer_limits_and_names_are_checked(accounts: Accounts) -> None:
    db = accounts.db
    tokens.create_token(db, "app-1", rpm=30, ipm=60)
    policy = consumers.policy(db, "app-1")
    assert (policy.rpm, policy.ipm, policy.balance) == (30, 60, None)
    consumers.set_limits(db, "app-1", rpm=0)
    assert consumers.policy(db, "app-1").rpm is None, "0 returns to the server default"
    with pytest.raises(InvalidRequest):
        tokens.create_token(db, "no spaces please")
    assert tokens.any_tokens(db)
