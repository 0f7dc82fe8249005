"""``Idempotency-Key`` on every dialect's image POST, over real HTTP (``docs/jobs.md``): a retry replays the
first response (same body, no new generation, usage row or charge); another request under the same key is a
422 in the dialect's envelope; keys are per consumer; failures a retry may fix free the key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.durable import (
    PRICE,
    START_BALANCE,
    Server,
    b64_image,
    base_settings,
    decode,
    durable_server,
    durable_settings,
    sse_json,
)
from tests.support.durable_dialects import DIALECTS, SOURCE, Dialect, aiml, aiml_image, sdk
from tests.support.waiting import until, wait_until

# The SDK marks images.create_variation deprecated; limner still serves /v1/images/variations.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")

KEY_HEADER = "Idempotency-Key"
REPLAYED = "idempotent-replayed"


def reused_message(key: str) -> str:
    return f"Idempotency-Key '{key}' was already used with a different request; send a new key for a new request."


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (starting one per test would double its time)."""
    settings = durable_settings(
        base_settings(tmp_path_factory.mktemp("idem") / "data"),
        idempotency_waiters_per_key=32,  # twenty duplicates all wait (the bound: tests/reliability)
    )
    with durable_server(settings) as running:
        yield running


@pytest.fixture
def server(shared: Server) -> Server:
    """The module's server, as new: engine, balances, usage (keys are unique per test)."""
    shared.reset()
    return shared


# --- every dialect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_retry_replays_the_first_response_and_is_charged_once(server: Server, dialect: Dialect) -> None:
    headers = {KEY_HEADER: server.key(dialect.name)}
    first = dialect.send(server, server.alice, headers, "first")
    assert first.status_code == 200, first.text[:300]
    assert REPLAYED not in first.headers
    assert dialect.image(server, first).size == dialect.size

    again = dialect.send(server, server.alice, headers, "first")
    assert again.status_code == 200, again.text[:300]
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content, "the same body: the same images, the same links"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert dialect.image(server, again).tobytes() == dialect.image(server, first).tobytes()
    assert again.headers["x-request-id"] != first.headers["x-request-id"], "each attempt has its own id"

    assert len(server.engine.requests) == 1, "one generation"
    rows = server.usage("alice")
    assert [(row.status, row.images) for row in rows] == [(200, 1)], "one usage row"
    assert server.balance("alice") == START_BALANCE - PRICE, "charged once"


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_the_same_key_with_another_request_is_refused(server: Server, dialect: Dialect) -> None:
    key = server.key("reused")
    assert dialect.send(server, server.alice, {KEY_HEADER: key}, "first").status_code == 200
    other = dialect.send(server, server.alice, {KEY_HEADER: key}, "second")
    assert other.status_code == 422, other.text[:300]
    code, message, param = dialect.error(other)
    assert (code, message) == (dialect.reused_code, reused_message(key))
    assert param in (None, KEY_HEADER)
    assert REPLAYED not in other.headers
    assert len(server.engine.requests) == 1, "the second request did not run"
    assert server.balance("alice") == START_BALANCE - PRICE


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_a_malformed_key_is_a_400_naming_the_header(server: Server, dialect: Dialect) -> None:
    for key in ("k" * 256, "has a space", "tab\tkey", ""):
        response = dialect.send(server, server.alice, {KEY_HEADER: key}, "first")
        assert response.status_code == 400, f"{key!r}: {response.text[:300]}"
        code, message, param = dialect.error(response)
        assert code == dialect.invalid_code
        assert message == "Invalid Idempotency-Key: use 1 to 255 visible ASCII characters (a UUID is a good choice)."
        assert param in (None, KEY_HEADER)
    assert server.engine.requests == [] and server.usage("alice") == []


def test_a_key_of_255_visible_characters_is_taken(server: Server) -> None:
    key = server.key("".join(chr(33 + i % 94) for i in range(246)))
    first = aiml(server, server.alice, {KEY_HEADER: key}, "first")
    again = aiml(server, server.alice, {KEY_HEADER: key}, "first")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers[REPLAYED] == "true" and again.content == first.content
    assert aiml_image(server, again).size == (512, 512)
    assert len(server.engine.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_keys_are_per_consumer(server: Server, dialect: Dialect) -> None:
    headers = {KEY_HEADER: server.key("shared")}
    alice = dialect.send(server, server.alice, headers, "first")
    bob = dialect.send(server, server.bob, headers, "first")
    assert (alice.status_code, bob.status_code) == (200, 200)
    assert REPLAYED not in bob.headers
    assert dialect.image(server, bob).size == dialect.size
    assert len(server.engine.requests) == 2, "two consumers: two requests"
    assert server.balance("alice") == server.balance("bob") == START_BALANCE - PRICE
    assert len(server.usage("alice")) == len(server.usage("bob")) == 1


# --- multipart, failures, streams ----------------------------------------------------------------


def multipart(boundary: str, fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart/form-data body with this boundary (the same form, encoded as a client chose)."""
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode(),
        ]
    for name, filename, data in files:
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode(),
            b"Content-Type: image/png",
            b"",
            data,
        ]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines)


def test_the_same_body_with_another_query_string_is_another_request(server: Server) -> None:
    key = server.key("query")
    body = {"prompt": "a kite", "model": "dall-e-2", "size": "256x256", "response_format": "b64_json"}

    def send(query: str) -> httpx.Response:
        return server.post(f"/v1/images/generations{query}", token=server.alice, headers={KEY_HEADER: key}, json=body)

    first = send("?variant=a&trace=1")
    assert first.status_code == 200, first.text[:300]
    reordered = send("?trace=1&variant=a")
    assert reordered.status_code == 200 and reordered.headers[REPLAYED] == "true", "the same parameters"
    assert reordered.content == first.content
    for query in ("?variant=b&trace=1", ""):
        other = send(query)
        assert other.status_code == 422, f"{query!r}: {other.text[:300]}"
        error = other.json()["error"]
        assert (error["code"], error["message"]) == ("idempotency_key_reused", reused_message(key))
        assert REPLAYED not in other.headers
    assert len(server.engine.requests) == 1, "neither other request ran"


@pytest.mark.parametrize(
    ("path", "fields", "part"),
    [
        ("/v1/images/edits", {"prompt": "a hat", "aspect_ratio": "auto", "resolution": "1K", "seed": "7"}, "images"),
        ("/v1/images/edits", {"prompt": "a hat", "size": "256x256", "response_format": "b64_json"}, "image"),
        ("/v1/images/variations", {"size": "256x256", "response_format": "b64_json"}, "image"),
    ],
    ids=["imagineart-edits", "openai-edits", "openai-variations"],
)
def test_a_form_encoded_with_another_boundary_replays(
    server: Server, path: str, fields: dict[str, str], part: str
) -> None:
    def send(boundary: str) -> httpx.Response:
        body = multipart(boundary, fields, [(part, "cat.png", SOURCE)])
        headers = {KEY_HEADER: server.key("form"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return server.post(path, token=server.alice, headers=headers, content=body)

    first, again = send("boundary-one-1111"), send("another-boundary-22")
    assert (first.status_code, again.status_code) == (200, 200), again.text[:300]
    assert again.headers[REPLAYED] == "true" and again.content == first.content
    image = decode(first.content) if part == "images" else b64_image(first.json()["data"][0]["b64_json"])
    assert image.size in ((64, 64), (256, 256), (1024, 1024))
    assert len(server.engine.requests) == 1

    changed = {**fields, **({"prompt": "a scarf"} if "prompt" in fields else {"size": "512x512"})}
    body = multipart("boundary-one-1111", changed, [(part, "cat.png", SOURCE)])
    headers = {KEY_HEADER: server.key("form"), "Content-Type": "multipart/form-data; boundary=boundary-one-1111"}
    other = server.post(path, token=server.alice, headers=headers, content=body)
    assert other.status_code == 422
    assert other.json()["error"]["message"] == reused_message(server.key("form"))


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_insufficient_credits_free_the_key_for_a_retry(server: Server, dialect: Dialect) -> None:
    """Whatever status the dialect gives it (OpenAI's 429, ImagineArt's 401, AI.ML's 403, Milady's 402)."""
    server.grant("alice", -START_BALANCE)
    headers = {KEY_HEADER: server.key("pay-later")}
    short = dialect.send(server, server.alice, headers, "first")
    code, message, _ = dialect.error(short)
    assert (short.status_code, code) == dialect.short, short.text[:300]
    assert message == ("Insufficient credits for image generation: this request costs 1 credits and the balance is 0.")
    assert server.engine.requests == []

    server.grant("alice", 5)
    paid = dialect.send(server, server.alice, headers, "first")
    assert paid.status_code == 200, paid.text[:300]
    assert REPLAYED not in paid.headers, "an answer for missing credits is not kept: the retry ran"
    assert dialect.image(server, paid).size == dialect.size
    replayed = dialect.send(server, server.alice, headers, "first")
    assert replayed.headers[REPLAYED] == "true" and replayed.content == paid.content
    assert server.balance("alice") == 5 - PRICE
    assert len(server.engine.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_an_engine_error_frees_the_key_for_a_retry(server: Server, dialect: Dialect) -> None:
    server.engine.failure = RuntimeError("the GPU fell over")
    headers = {KEY_HEADER: server.key("flaky-engine")}
    failed = dialect.send(server, server.alice, headers, "first")
    code, _, _ = dialect.error(failed)
    assert (failed.status_code, code) == dialect.failed, failed.text[:300]
    assert server.balance("alice") == START_BALANCE, "a failure is refunded"

    server.engine.failure = None
    ok = dialect.send(server, server.alice, headers, "first")
    assert ok.status_code == 200, ok.text[:300]
    assert REPLAYED not in ok.headers, "a 5xx is not kept: the retry ran"
    assert dialect.image(server, ok).size == dialect.size
    assert len(server.engine.requests) == 2
    assert [row.status for row in server.usage("alice")] == [502, 200]
    assert server.balance("alice") == START_BALANCE - PRICE


def test_a_kept_error_is_replayed_as_the_error(server: Server) -> None:
    body = {"prompt": "x", "model": "no-such-model", "size": "256x256"}
    headers = {**bearer(server.alice), KEY_HEADER: server.key("bad-model")}
    first = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    again = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 404
    assert first.json()["error"]["code"] == "model_not_found"
    assert again.headers[REPLAYED] == "true" and again.content == first.content


def test_a_stream_is_replayed_as_the_same_events(server: Server) -> None:
    body = {"prompt": "a fox", "model": "gpt-image-1", "size": "256x256", "stream": True, "partial_images": 1}
    headers = {**bearer(server.alice), KEY_HEADER: server.key("stream-key")}
    first = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    again = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"].startswith("text/event-stream")
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers[REPLAYED] == "true"
    assert again.text == first.text
    events = sse_json(again.text)
    completed = [data for name, data in events if name == "image_generation.completed"]
    assert len(completed) == 1 and b64_image(completed[0]["b64_json"]).size == (256, 256)
    assert len(server.engine.requests) == 1
    assert server.balance("alice") == START_BALANCE - PRICE

    with sdk(server, server.alice) as client:
        stream = client.images.generate(
            prompt="a fox",
            model="gpt-image-1",
            size="256x256",
            stream=True,
            partial_images=1,
            extra_headers={KEY_HEADER: server.key("stream-key")},
        )
        kinds = [event.type for event in stream]
    assert kinds[-1] == "image_generation.completed", "the official SDK reads the replayed stream"
    assert len(server.engine.requests) == 1


# --- concurrency ----------------------------------------------------------------------------------


def test_twenty_concurrent_duplicates_run_once(server: Server) -> None:
    server.engine.gate.clear()  # the first holds the engine until all twenty have arrived
    body = {"prompt": "a crowd", "model": "dall-e-2", "size": "256x256", "response_format": "b64_json"}
    headers = {**bearer(server.alice), KEY_HEADER: server.key("twenty")}

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=headers) as client:
            sends = [asyncio.create_task(client.post("/v1/images/generations", json=body)) for _ in range(20)]
            await until(lambda: len(server.engine.requests) >= 1, what="the first request reaching the engine")
            await asyncio.sleep(0.3)  # let the other nineteen arrive and wait (the outcome holds either way)
            server.engine.gate.set()
            return await asyncio.gather(*sends)

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.content for r in responses}) == 1, "all twenty got the same body"
    assert sum(REPLAYED not in r.headers for r in responses) == 1, "one ran, nineteen replayed it"
    assert b64_image(responses[0].json()["data"][0]["b64_json"]).size == (256, 256)
    assert len(server.engine.requests) == 1, "one generation"
    wait_until(lambda: len(server.usage("alice")) >= 1, what="the usage row")
    assert len(server.usage("alice")) == 1
    assert server.balance("alice") == START_BALANCE - PRICE, "one charge"


def test_a_stream_that_failed_after_it_started_frees_the_key(server: Server) -> None:
    """The error is an event inside a 200: the failure behind it, not the status, decides."""
    body = {"prompt": "a fox", "model": "gpt-image-1", "size": "256x256", "stream": True}
    headers = {**bearer(server.alice), KEY_HEADER: server.key("stream-failed")}
    server.engine.failure = RuntimeError("the GPU fell over")
    failed = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert failed.status_code == 200
    errors = [data for name, data in sse_json(failed.text) if name == "error"]
    assert errors and errors[-1]["error"]["code"] == "model_error", failed.text[:300]
    assert server.balance("alice") == START_BALANCE

    server.engine.failure = None
    again = httpx.post(server.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert again.status_code == 200 and REPLAYED not in again.headers, "the retry ran"
    completed = [data for name, data in sse_json(again.text) if name == "image_generation.completed"]
    assert len(completed) == 1 and b64_image(completed[0]["b64_json"]).size == (256, 256)
    assert len(server.engine.requests) == 2
    assert server.balance("alice") == START_BALANCE - PRICE
