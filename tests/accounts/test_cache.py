"""The in-process cache of tokens and consumer policies: answers kept until the accounts version moves,
and a change made anywhere (another process, another replica) seen within one check interval."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from limner.accounts import consumers, credits, tokens
from limner.accounts.cache import AccountsCache, current_version
from limner.accounts.service import Accounts
from limner.core.errors import InvalidToken
from limner.settings import Settings


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair(priced: Settings, database_url: str) -> Iterator[tuple[Accounts, Accounts, Clock]]:
    """A server's accounts (cache on a hand-moved clock, one-second checks) and the CLI's, on one database."""
    settings = priced.with_overrides(database_url=database_url)
    server, cli, clock = Accounts.open(settings), Accounts.open(settings), Clock()
    server.cache = AccountsCache(server.db, 1.0, clock=clock)
    yield server, cli, clock
    server.db.dispose()
    cli.db.dispose()


def lookups(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens the server looks up in its database from now on."""
    seen: list[str] = []
    real = tokens.lookup_token

    def counting(db: object, token: str, now: object = None) -> object:
        seen.append(token)
        return real(accounts.db, token)

    monkeypatch.setattr(tokens, "lookup_token", counting)
    return seen


async def test_a_revocation_elsewhere_is_refused_within_one_interval(
    pair: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cli, clock = pair
    issued = tokens.create_token(cli.db, "alice")
    seen = lookups(server, monkeypatch)
    header = f"Bearer {issued.token}"
    for _ in range(3):
        assert (await server.authenticate(header, open_allowed=False)).consumer == "alice"
    assert seen == [issued.token], "verified once, then answered from the cache"

    tokens.revoke_token(cli.db, issued.prefix)
    clock.now += 0.9
    assert (await server.authenticate(header, open_allowed=False)).consumer == "alice", "not checked again yet"
    clock.now += 0.1
    with pytest.raises(InvalidToken) as caught:
        await server.authenticate(header, open_allowed=False)
    assert caught.value.code == "invalid_token" and caught.value.message == "Invalid API token."


async def test_unknown_tokens_are_never_cached(
    pair: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cli, _ = pair
    tokens.create_token(cli.db, "alice")  # the server requires tokens from now on
    seen = lookups(server, monkeypatch)
    guess = tokens.new_secret()
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await server.authenticate(f"Bearer {guess}", open_allowed=False)
    assert seen == [guess, guess]
    made = tokens.create_token(cli.db, "bob")  # works at once, without waiting for a version check
    assert (await server.authenticate(f"Bearer {made.token}", open_allowed=False)).consumer == "bob"


async def test_an_expired_token_is_refused_at_once_from_the_cache(
    pair: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cli, _ = pair
    issued = tokens.create_token(cli.db, "alice", expires_at=tokens.utcnow() + timedelta(hours=1))
    header = f"Bearer {issued.token}"
    assert (await server.authenticate(header, open_allowed=False)).consumer == "alice"
    assert tokens.hash_token(issued.token) in server.cache.tokens
    later = tokens.utcnow() + timedelta(hours=2)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)  # no version change: expiry is the token's own
    with pytest.raises(InvalidToken):
        await server.authenticate(header, open_allowed=False)


async def test_policies_follow_limits_and_metering_changes_within_one_interval(
    pair: tuple[Accounts, Accounts, Clock],
) -> None:
    server, cli, clock = pair
    consumers.create_consumer(cli.db, "alice", rpm=10)
    first = await server.policy("alice")
    assert (first.rpm, first.balance) == (10, None)

    consumers.set_limits(cli.db, "alice", rpm=20)
    credits.grant(cli.db, "alice", 5_000_000)
    assert (await server.policy("alice")).rpm == 10, "cached until the next check"
    clock.now += 1.0
    changed = await server.policy("alice")
    assert (changed.rpm, changed.balance) == (20, 5_000_000)

    credits.set_unmetered(cli.db, "alice")
    clock.now += 1.0
    assert (await server.policy("alice")).balance is None


async def test_changes_made_through_this_process_clear_its_cache_at_commit(
    pair: tuple[Accounts, Accounts, Clock],
) -> None:
    server, _, _ = pair
    issued = tokens.create_token(server.db, "alice")
    header = f"Bearer {issued.token}"
    assert (await server.authenticate(header, open_allowed=False)).consumer == "alice"
    before = current_version(server.db)
    tokens.revoke_token(server.db, issued.prefix)  # as the admin API does, on the server's own engine
    assert current_version(server.db) == before + 1
    with pytest.raises(InvalidToken):
        await server.authenticate(header, open_allowed=False)


async def test_an_answer_read_before_a_change_is_not_stored_after_it(pair: tuple[Accounts, Accounts, Clock]) -> None:
    server, cli, _ = pair
    issued = tokens.create_token(cli.db, "alice")
    found = tokens.lookup_token(server.db, issued.token)
    assert found is not None
    generation = server.cache.generation
    server.cache.clear()  # a version change seen while that lookup was in flight
    server.cache.remember_token(tokens.hash_token(issued.token), found[0], found[1], generation)
    assert server.cache.tokens == {}
