"""The waiting-duplicates test: retries that arrive while the first request with their ``Idempotency-Key``
still runs wait for it without reading the database, within a bound per key and per consumer (past it:
409 ``idempotency_key_in_use`` with ``Retry-After``, in the calling dialect's envelope), count against the
consumer's rate limits, and all get the first request's answer, byte for byte, when it ends.

The first request is held in the engine (``ControlledEngine.gate``) until the test lets it go; every SQL
statement the server runs is heard by a listener on its engine, so the test counts what waiting costs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from limner.accounts import consumers
from limner.accounts.models import JobRecord
from limner.http.key_waits import KeyWaits
from tests.support.accounts import bearer
from tests.support.durable import PRICE, START_BALANCE, Server, base_settings, durable_server, durable_settings
from tests.support.durable_dialects import DIALECTS, Dialect
from tests.support.waiting import until, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")  # the SDK's create_variation

PER_KEY = 3
PER_CONSUMER = 5
DUPLICATES = 12
LISTINGS = 40
"""Another consumer's ``GET /v1/jobs`` calls: the stretch of time over which waiting is watched."""
PATH = "/v1/images/generations"
BODY = {"prompt": "a crowd", "model": "dall-e-2", "size": "256x256", "response_format": "b64_json"}
KEY_HEADER = "Idempotency-Key"
REPLAYED = "idempotent-replayed"


def per_key_message(key: str) -> str:
    return (
        f"The first request with Idempotency-Key '{key}' is still running, with as many retries waiting for it "
        f"as allowed ({PER_KEY}); retry in 5 s."
    )


PER_CONSUMER_MESSAGE = (
    "You have as many retries waiting for still-running requests with their Idempotency-Key as one consumer "
    f"may ({PER_CONSUMER}); retry in 5 s."
)


class Statements:
    """Every SQL statement the server runs, as it runs (from the database threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []
        self.lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._heard)

    def _heard(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        with self.lock:
            self.seen.append(statement)

    def mark(self) -> int:
        with self.lock:
            return len(self.seen)

    def since(self, mark: int) -> list[str]:
        with self.lock:
            return self.seen[mark:]

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._heard)


def job_reads(statements: list[str]) -> list[str]:
    """Reads of one job row by its id: what a waiter polling the database runs each time."""
    return [one for one in statements if "FROM jobs" in one and "WHERE jobs.id = " in one]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = durable_settings(
        base_settings(tmp_path_factory.mktemp("waiting") / "data"),
        idempotency_waiters_per_key=PER_KEY,
        idempotency_waiters_per_consumer=PER_CONSUMER,
        job_poll_seconds=3600.0,  # no async jobs here: keep the runner's own reads out of the counts
    )
    with durable_server(settings) as running:
        yield running


@pytest.fixture
def server(shared: Server) -> Iterator[Server]:
    shared.reset()
    yield shared
    shared.engine.gate.set()
    assert waits(shared).keys == {} and not waits(shared).consumers, "every wait was let go"


@pytest.fixture
def statements(shared: Server) -> Iterator[Statements]:
    heard = Statements(shared.app.state.limner.accounts.db.engine)
    yield heard
    heard.close()


def waits(server: Server) -> KeyWaits:
    found: KeyWaits = server.app.state.limner.key_waits
    return found


def running(server: Server, key: str) -> bool:
    """Whether a request with ``key`` holds it (one at a time reaches the engine: the model has one slot)."""
    with server.app.state.limner.accounts.db.read() as session:
        status = session.scalar(select(JobRecord.status).where(JobRecord.idempotency_key == key))
    return status == "running"


def assert_in_use(response: httpx.Response, message: str) -> None:
    assert response.status_code == 409, response.text[:300]
    error = response.json()["error"]
    assert (error["code"], error["message"], error["param"]) == ("idempotency_key_in_use", message, KEY_HEADER)
    assert response.headers["retry-after"] == "5"
    assert REPLAYED not in response.headers


def test_duplicates_past_the_bound_get_409_the_rest_wait_without_polling_and_get_the_first_answer(
    server: Server, statements: Statements
) -> None:
    server.engine.gate.clear()
    key = server.key("crowd")
    headers = {**bearer(server.alice), KEY_HEADER: key}

    async def listings(client: httpx.AsyncClient) -> list[str]:
        mark = statements.mark()
        for _ in range(LISTINGS):
            listed = await client.get("/v1/jobs")
            assert listed.status_code == 200, listed.text[:300]
        return statements.since(mark)

    async def scenario() -> dict[str, Any]:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60, headers=headers) as alice,
            httpx.AsyncClient(base_url=server.url, timeout=60, headers=bearer(server.bob)) as bob,
        ):
            first = asyncio.create_task(alice.post(PATH, json=BODY))
            await until(lambda: len(server.engine.requests) == 1, what="the first request reaching the engine")
            baseline = await listings(bob)  # while only the first runs

            duplicates = [asyncio.create_task(alice.post(PATH, json=BODY)) for _ in range(DUPLICATES)]
            await until(
                lambda: (
                    sum(task.done() for task in duplicates) == DUPLICATES - PER_KEY
                    and waits(server).count("alice", key) == PER_KEY
                ),
                what=f"{PER_KEY} duplicates waiting and the rest answered",
            )
            refused = [task.result() for task in duplicates if task.done()]
            waiting = [task for task in duplicates if not task.done()]
            quiet = await listings(bob)  # while the first runs and PER_KEY duplicates wait for it
            assert not any(task.done() for task in waiting), "nobody stopped waiting before the first ended"

            mark = statements.mark()
            server.engine.gate.set()
            answered = await asyncio.gather(first, *waiting)
            return {
                "refused": refused,
                "answered": answered,
                "baseline": baseline,
                "quiet": quiet,
                "woken": statements.since(mark),
            }

    seen = asyncio.run(scenario())

    assert len(seen["refused"]) == DUPLICATES - PER_KEY
    for response in seen["refused"]:
        assert_in_use(response, per_key_message(key))

    first, *replays = seen["answered"]
    assert first.status_code == 200 and REPLAYED not in first.headers, first.text[:300]
    assert [(r.status_code, r.headers[REPLAYED]) for r in replays] == [(200, "true")] * PER_KEY
    assert all(r.content == first.content for r in replays), "every waiter got the first answer, byte for byte"
    assert len(server.engine.requests) == 1, "one generation"

    assert job_reads(seen["quiet"]) == [], "no waiter read its job row while it waited"
    assert len(seen["quiet"]) <= len(seen["baseline"]) + 2, "waiting added no statements to another's listings"
    assert len(job_reads(seen["woken"])) <= PER_KEY + 1, "each waiter read the row once when woken (+ the store)"

    wait_until(lambda: len(server.usage("alice")) == 1, what="the usage row")
    assert server.balance("alice") == START_BALANCE - PRICE, "one charge"


def test_the_bound_per_consumer_counts_every_key_of_that_consumer_only(server: Server) -> None:
    server.engine.gate.clear()
    keys = [server.key("one"), server.key("two"), server.key("bobs")]

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60, headers=bearer(server.alice)) as alice,
            httpx.AsyncClient(base_url=server.url, timeout=60, headers=bearer(server.bob)) as bob,
        ):

            def send(client: httpx.AsyncClient, key: str) -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(client.post(PATH, json=BODY, headers={KEY_HEADER: key}))

            firsts = [send(alice, keys[0]), send(alice, keys[1]), send(bob, keys[2])]
            await until(lambda: all(running(server, key) for key in keys), what="three first requests running")
            waiting = [send(alice, keys[0]) for _ in range(PER_KEY)]
            waiting += [send(alice, keys[1]) for _ in range(PER_CONSUMER - PER_KEY)]
            waiting.append(send(bob, keys[2]))
            await until(
                lambda: waits(server).count("alice") == PER_CONSUMER and waits(server).count("bob") == 1,
                what="alice's duplicates and bob's waiting",
            )
            refused = await alice.post(PATH, json=BODY, headers={KEY_HEADER: keys[1]})  # under its key's bound
            server.engine.gate.set()
            return refused, await asyncio.gather(*firsts, *waiting)

    refused, answered = asyncio.run(scenario())
    assert_in_use(refused, PER_CONSUMER_MESSAGE)
    assert [r.status_code for r in answered] == [200] * len(answered)
    assert sum(REPLAYED not in r.headers for r in answered) == 3, "three ran; every waiter, bob's too, replayed"
    assert len(server.engine.requests) == 3


def test_waiters_count_against_the_consumers_rate_limit(server: Server) -> None:
    token = server.token_for("carol")
    consumers.set_limits(server.app.state.limner.accounts.db, "carol", rpm=2)
    server.engine.gate.clear()
    headers = {**bearer(token), KEY_HEADER: server.key("limited")}

    async def scenario() -> tuple[httpx.Response, tuple[httpx.Response, httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=headers) as carol:
            first = asyncio.create_task(carol.post(PATH, json=BODY))  # takes one request of two
            await until(lambda: len(server.engine.requests) == 1, what="the first request reaching the engine")
            waiter = asyncio.create_task(carol.post(PATH, json=BODY))  # the second
            await until(lambda: waits(server).count("carol") == 1, what="the duplicate waiting")
            limited = await carol.post(PATH, json=BODY)  # a third within the minute
            server.engine.gate.set()
            return limited, await asyncio.gather(first, waiter)

    limited, (first, replay) = asyncio.run(scenario())
    assert limited.status_code == 429, limited.text[:300]
    error = limited.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached (2 requests/min per model); retry in ")
    assert int(limited.headers["retry-after"]) >= 1
    assert (first.status_code, replay.status_code, replay.headers[REPLAYED]) == (200, 200, "true")
    assert replay.content == first.content


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_duplicate_past_the_bound_gets_409_in_the_dialects_envelope(server: Server, dialect: Dialect) -> None:
    server.engine.gate.clear()
    key = server.key(dialect.name)
    headers = {KEY_HEADER: key}

    def send() -> httpx.Response:
        return dialect.send(server, server.alice, headers, "first")

    with ThreadPoolExecutor(PER_KEY + 1) as pool:
        first = pool.submit(send)
        wait_until(lambda: len(server.engine.requests) == 1, what="the first request reaching the engine")
        waiting: list[Future[httpx.Response]] = [pool.submit(send) for _ in range(PER_KEY)]
        wait_until(lambda: waits(server).count("alice", key) == PER_KEY, what="the duplicates waiting")
        refused = send()
        server.engine.gate.set()
        answered = [first.result(), *(future.result() for future in waiting)]

    assert refused.status_code == 409, refused.text[:300]
    assert dialect.error(refused)[:2] == (dialect.in_use_code, per_key_message(key))
    assert refused.headers["retry-after"] == "5"
    assert [r.status_code for r in answered] == [200] * (PER_KEY + 1)
    assert all(r.content == answered[0].content for r in answered), "the first answer, byte for byte"
    assert dialect.image(server, answered[-1]).size == dialect.size
