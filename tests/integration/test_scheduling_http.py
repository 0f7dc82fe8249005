"""Priorities, start deadlines and per-consumer model permissions in every dialect, over real HTTP.

The ``pattern`` model runs one request at a time; holding its engine (``ControlledEngine.gate``) makes the
next requests wait in its line, where ``Limner-Priority`` orders them and ``Limner-Start-Deadline`` ends
the ones that do not start in time (each dialect's own timeout, charged nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from limner.accounts import consumers
from limner.engines.slots import ModelSlots
from tests.support.durable import Server, base_settings, durable_server, durable_settings
from tests.support.durable_dialects import DIALECTS, Dialect, openai_generation
from tests.support.waiting import wait_until

pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")  # the SDK's create_variation

TIMEOUT = {"milady": 500}
"""Each dialect's status for limner's ``timeout`` (504 elsewhere)."""
NOT_FOUND = {
    "openai": (404, "model_not_found"),
    "aigne": (404, "model_not_found"),
    "aiml": (400, "model_not_found"),
    "milady": (400, "model_not_found"),
    "imagineart": (502, "model_not_available"),
}
"""Each dialect's answer for a model that does not exist (its error table's ``model_not_found``)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = durable_settings(base_settings(tmp_path_factory.mktemp("scheduling")))
    with durable_server(settings) as live:
        yield live


@pytest.fixture
def fresh(server: Server) -> Iterator[Server]:
    server.reset()
    yield server
    server.engine.gate.set()


def slots(server: Server) -> ModelSlots:
    return server.app.state.limner.service.queues()["pattern"]


def family(dialect: Dialect) -> str:
    return dialect.name.split("-")[0]


def hold_engine(server: Server, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """A request that occupies the model until ``server.engine.gate`` is set."""
    server.engine.gate.clear()
    held = pool.submit(openai_generation, server, server.bob, {}, "holder")
    wait_until(lambda: len(server.engine.requests) == 1, what="the holder inside the engine")
    return held


def access(server: Server, consumer: str, **settings: object) -> str:
    token = server.token_for(consumer)
    db = server.app.state.limner.accounts.db
    consumers.set_access(db, consumer, **settings)  # type: ignore[arg-type]
    return token


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_request_not_started_by_its_deadline_is_a_timeout_charged_nothing(fresh: Server, dialect: Dialect) -> None:
    with ThreadPoolExecutor(2) as pool:
        held = hold_engine(fresh, pool)
        before = fresh.balance("alice")
        response = dialect.send(fresh, fresh.alice, {"Limner-Start-Deadline": "0.3"}, "too late")
        fresh.engine.gate.set()
        assert held.result().status_code == 200
    assert response.status_code == TIMEOUT.get(family(dialect), 504), response.text
    code, message, _ = dialect.error(response)
    assert "timeout" in code and "start deadline" in message and "Nothing was charged" in message
    assert fresh.balance("alice") == before
    assert [row.cost for row in fresh.usage("alice")] == [0]
    assert len(fresh.engine.requests) == 1, "it never reached the engine"


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_higher_priority_request_starts_before_an_earlier_one(fresh: Server, dialect: Dialect) -> None:
    urgent = access(fresh, "dave", max_priority=5)
    with ThreadPoolExecutor(3) as pool:
        held = hold_engine(fresh, pool)
        low = pool.submit(openai_generation, fresh, fresh.alice, {}, "first")
        wait_until(lambda: slots(fresh).waiting == 1, what="the low-priority request in line")
        high = pool.submit(dialect.send, fresh, urgent, {"Limner-Priority": "5"}, "urgent")
        wait_until(lambda: slots(fresh).waiting == 2, what="the urgent request in line")
        fresh.engine.gate.set()
        statuses = [future.result().status_code for future in (held, low, high)]
    assert statuses == [200, 200, 200]
    holder, second, third = fresh.engine.requests
    assert holder.prompt == "holder"
    assert third.prompt == "first" and third.width == 256, "the low-priority request ran last"
    assert second.prompt == "urgent" or (dialect.name == "openai-variations" and second.width == 512)


def test_a_priority_above_the_consumers_maximum_is_capped(fresh: Server) -> None:
    capped = access(fresh, "erin", max_priority=0)
    with ThreadPoolExecutor(3) as pool:
        held = hold_engine(fresh, pool)
        first = pool.submit(openai_generation, fresh, fresh.alice, {}, "first")
        wait_until(lambda: slots(fresh).waiting == 1, what="the first request in line")
        pushy = pool.submit(openai_generation, fresh, capped, {"Limner-Priority": "100"}, "pushy")
        wait_until(lambda: slots(fresh).waiting == 2, what="the pushy request in line")
        fresh.engine.gate.set()
        assert [future.result().status_code for future in (held, first, pushy)] == [200, 200, 200]
    assert [request.prompt for request in fresh.engine.requests] == ["holder", "first", "pushy"]


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_malformed_scheduling_header_is_the_dialects_400(fresh: Server, dialect: Dialect) -> None:
    for header, value in (("Limner-Priority", "urgent"), ("Limner-Start-Deadline", "-1")):
        response = dialect.send(fresh, fresh.alice, {header: value}, "bad header")
        assert response.status_code == 400, response.text
        code, message, _ = dialect.error(response)
        assert code == dialect.invalid_code and header in message
    assert fresh.engine.requests == []


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_model_the_consumer_may_not_use_answers_as_one_that_does_not_exist(fresh: Server, dialect: Dialect) -> None:
    limited = access(fresh, "carol", models=["slow"])
    response = dialect.send(fresh, limited, {}, "not yours")
    assert (response.status_code, dialect.error(response)[0]) == NOT_FOUND[family(dialect)], response.text
    assert "pattern" not in dialect.error(response)[1].split("Available models:")[-1]
    assert fresh.engine.requests == []
    allowed = dialect.send(fresh, access(fresh, "frank", models=["pattern"]), {}, "yours")
    assert allowed.status_code == 200, allowed.text


def test_model_listings_show_only_the_models_a_consumer_may_use(fresh: Server) -> None:
    limited = access(fresh, "carol", models=["slow"])
    listed = fresh.get("/v1/models", token=limited).json()["data"]
    assert [item["id"] for item in listed] == ["slow"]
    everything = {item["id"] for item in fresh.get("/v1/models", token=fresh.alice).json()["data"]}
    assert {"pattern", "slow", "dall-e-2"} <= everything
    imagineart = fresh.get("/v1/models", token=limited, headers={"Limner-Dialect": "imagineart"})
    assert imagineart.status_code == 200 and imagineart.json()["data"] == []
    hidden = fresh.get("/v1/models/dall-e-2", token=limited)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    assert fresh.get("/v1/models/slow", token=limited).status_code == 200


def test_a_consumers_default_start_deadline_applies_without_the_header(fresh: Server) -> None:
    patient = access(fresh, "gina", start_deadline=0.3)
    with ThreadPoolExecutor(2) as pool:
        held = hold_engine(fresh, pool)
        response = openai_generation(fresh, patient, {}, "default deadline")
        fresh.engine.gate.set()
        assert held.result().status_code == 200
    assert response.status_code == 504 and "start deadline" in response.json()["error"]["message"]
