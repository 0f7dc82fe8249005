"""``Prefer: respond-async`` on every dialect's generation and edit routes, ``/v1/jobs`` and webhooks, over real
HTTP (``docs/jobs.md``): a 202 with the job, the job run in the background to the response the synchronous
request would have had, owners only, listing, events, cancelling (refunded), and signed webhook deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from limner.accounts.models import Consumer
from limner.service.webhooks import WebhookSecrets, configure_consumer, server_secret
from limner.settings import Settings
from tests.support.durable import (
    PRICE,
    START_BALANCE,
    Server,
    b64_image,
    base_settings,
    durable_server,
    durable_settings,
    sse_json,
)
from tests.support.durable_dialects import DIALECTS, Dialect
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import Receiver, webhook_receiver

# The SDK marks images.create_variation deprecated; limner still serves /v1/images/variations.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")

ASYNC = {"Prefer": "respond-async"}
NOT_FOUND = "No job with id '{}'."
SLOW_BODY = {"prompt": "a slow cat", "model": "slow", "size": "256x256", "response_format": "b64_json"}
JOB_FIELDS = {
    "id", "object", "status", "model", "queue_position", "step", "total_steps", "eta_seconds", "created_at",
    "started_at", "finished_at", "attempts", "error", "error_message", "result_status", "result_content_type",
    "result_url", "result", "webhook",
}  # fmt: skip


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, running one job at a time (so a second job stays queued behind a slow one)."""
    data_dir = tmp_path_factory.mktemp("jobs") / "data"
    with durable_server(durable_settings(base_settings(data_dir), job_workers=1)) as running:
        yield running


@pytest.fixture
def server(shared: Server) -> Server:
    shared.reset()
    return shared


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def submit(server: Server, token: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An async OpenAI generation: checks the 202 and returns the job."""
    response = server.post("/v1/images/generations", token=token, json=body, headers={**ASYNC, **(headers or {})})
    assert response.status_code == 202, response.text[:300]
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return job


def quick(prompt: str = "a quick cat") -> dict[str, Any]:
    return {"prompt": prompt, "model": "dall-e-2", "size": "256x256", "response_format": "b64_json"}


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


# --- every dialect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS, ids=str)
def test_an_async_request_runs_to_the_synchronous_response(server: Server, dialect: Dialect) -> None:
    accepted = dialect.send(server, server.alice, ASYNC, "first")
    assert accepted.status_code == 202, accepted.text[:300]
    job = accepted.json()
    assert set(job) == JOB_FIELDS and job["object"] == "job"
    assert job["id"].startswith("job_") and job["status"] in ("queued", "running", "done")
    assert accepted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert accepted.headers["preference-applied"] == "respond-async"

    done = server.wait_job(job["id"], server.alice)
    assert done["status"] == "done", done
    assert (done["result_status"], done["error"], done["attempts"]) == (200, None, 1)
    assert done["result_url"] == f"/v1/jobs/{job['id']}/result"
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]

    result = server.get(done["result_url"], token=server.alice)
    assert result.status_code == 200
    assert result.headers["content-type"] == done["result_content_type"]
    assert dialect.image(server, result).size == dialect.size, "the synchronous response's image"
    if dialect.name.startswith("imagineart"):
        assert done["result"] is None and done["result_content_type"] == "image/png"
        assert result.headers["x-model"] == "pattern"
    else:
        assert done["result"] == result.json(), "result: the dialect's JSON body"
    assert len(server.engine.requests) == 1
    assert server.balance("alice") == START_BALANCE - PRICE
    assert [(row.status, row.images) for row in server.usage("alice")] == [(200, 1)]


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if d.name != "openai-variations"], ids=str)
def test_an_invalid_request_is_refused_before_it_is_accepted(server: Server, dialect: Dialect) -> None:
    refused = dialect.send(server, server.alice, ASYNC, "")
    assert refused.status_code == 400, refused.text[:300]
    code, message, _ = dialect.error(refused)
    assert code == dialect.invalid_code
    assert message == (
        "Invalid prompt: prompt is required and must be a non-empty string."
        if dialect.name == "milady"
        else "Invalid value for 'prompt' \"\": String should have at least 1 character."
    )
    assert "preference-applied" not in refused.headers and "location" not in refused.headers
    listing = server.get("/v1/jobs", token=server.alice).json()
    assert all(job["created_at"] < server.reset_at for job in listing["data"]), "no job was made"
    assert server.engine.requests == [] and server.balance("alice") == START_BALANCE


def test_an_async_failure_is_a_failed_job_with_the_error_envelope(server: Server) -> None:
    server.engine.failure = RuntimeError("the GPU fell over")
    job = submit(server, server.alice, quick())
    failed = server.wait_job(job["id"], server.alice)
    assert (failed["status"], failed["error"], failed["result_status"]) == ("failed", "model_error", 502)
    assert failed["result"]["error"]["code"] == "model_error"
    assert failed["error_message"] == failed["result"]["error"]["message"]
    result = server.get(f"/v1/jobs/{job['id']}/result", token=server.alice)
    assert result.status_code == 502 and result.json() == failed["result"]
    assert server.balance("alice") == START_BALANCE, "refunded"


def test_an_async_stream_keeps_the_streams_completed_events(server: Server) -> None:
    """``stream: true`` with ``Prefer: respond-async``: the job's result is the stream's answer, its completed
    event carrying the image (no partial images: nobody watched them being made)."""
    job = submit(server, server.alice, {**quick("a streamed cat"), "stream": True, "partial_images": 2})
    done = server.wait_job(job["id"], server.alice)
    assert (done["status"], done["result_status"], done["result"]) == ("done", 200, None), done
    result = server.get(done["result_url"], token=server.alice)
    assert result.headers["content-type"].startswith("text/event-stream")
    events = sse_json(result.text)
    assert [name for name, _ in events] == ["image_generation.completed"]
    completed = events[0][1]
    assert completed["type"] == "image_generation.completed" and completed["size"] == "256x256"
    assert b64_image(completed["b64_json"]).size == (256, 256)
    assert completed["usage"]["output_tokens"] > 0
    assert server.balance("alice") == START_BALANCE - PRICE


def test_a_key_with_prefer_replays_the_same_job(server: Server) -> None:
    headers = {"Idempotency-Key": server.key("async")}
    first = submit(server, server.alice, quick(), headers)
    again = server.post("/v1/images/generations", token=server.alice, json=quick(), headers={**ASYNC, **headers})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first["id"]
    done = server.wait_job(first["id"], server.alice)
    assert b64_image(done["result"]["data"][0]["b64_json"]).size == (256, 256)
    assert len(server.engine.requests) == 1 and server.balance("alice") == START_BALANCE - PRICE


# --- /v1/jobs ------------------------------------------------------------------------------------


def test_another_consumer_sees_no_job(server: Server) -> None:
    job = submit(server, server.alice, quick())
    server.wait_job(job["id"], server.alice)
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/result"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
    ):
        response = server.request(method, path, token=server.bob)
        assert error_of(response) == (404, "not_found", NOT_FOUND.format(job["id"])), f"{method} {path}"
        unknown = server.request(method, path.replace(job["id"], "job_000000000000000000000000"), token=server.alice)
        assert unknown.status_code == 404 and unknown.json() == {
            "error": {**response.json()["error"], "message": NOT_FOUND.format("job_000000000000000000000000")}
        }, "the same answer as for an id that never existed"
    assert job["id"] not in [item["id"] for item in server.get("/v1/jobs", token=server.bob).json()["data"]]
    assert server.job(job["id"], server.alice)["status"] == "done", "still the owner's"


def test_the_result_is_404_until_the_job_ends(server: Server) -> None:
    job = submit(server, server.alice, SLOW_BODY)
    server.wait_job(job["id"], server.alice, "running")
    early = server.get(f"/v1/jobs/{job['id']}/result", token=server.alice)
    assert error_of(early) == (404, "not_found", f"Job '{job['id']}' has no result (status: running).")
    assert server.request("DELETE", f"/v1/jobs/{job['id']}", token=server.alice).json()["status"] == "cancelled"


def test_listing_filters_and_pages(server: Server) -> None:
    carol = server.token_for("carol")
    ids = [submit(server, carol, quick(f"cat {n}"))["id"] for n in range(3)]
    for job_id in ids:
        server.wait_job(job_id, carol)
    slow = submit(server, carol, SLOW_BODY)["id"]
    server.wait_job(slow, carol, "running")

    every = server.get("/v1/jobs", token=carol).json()
    assert every["object"] == "list" and every["has_more"] is False
    assert [job["id"] for job in every["data"]] == [slow, *reversed(ids)], "newest first"
    assert every["last_id"] == ids[0] and all(job["result"] is None for job in every["data"])

    first = server.get("/v1/jobs", token=carol, params={"limit": 2}).json()
    assert ([job["id"] for job in first["data"]], first["has_more"], first["last_id"]) == ([slow, ids[2]], True, ids[2])
    rest = server.get("/v1/jobs", token=carol, params={"limit": 2, "after": first["last_id"]}).json()
    assert ([job["id"] for job in rest["data"]], rest["has_more"], rest["last_id"]) == (ids[1::-1], False, ids[0])

    running = server.get("/v1/jobs", token=carol, params={"status": "queued,running"}).json()
    assert [job["id"] for job in running["data"]] == [slow]
    done = server.get("/v1/jobs", token=carol, params={"status": "done"}).json()
    assert [job["id"] for job in done["data"]] == ids[::-1]

    unknown = server.get("/v1/jobs", token=carol, params={"status": "done,finished"})
    assert error_of(unknown) == (
        400,
        "invalid_value",
        "Unknown job status 'finished': use cancelled, done, failed, queued, running.",
    )
    assert unknown.json()["error"]["param"] == "status"
    too_many = server.get("/v1/jobs", token=carol, params={"limit": 101})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"
    assert server.request("DELETE", f"/v1/jobs/{slow}", token=carol).json()["status"] == "cancelled"


def test_events_follow_the_job_to_its_end(server: Server) -> None:
    job = submit(server, server.alice, quick())
    events = server.get(f"/v1/jobs/{job['id']}/events", token=server.alice)
    assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
    parsed = sse_json(events.text)
    names = [name for name, _ in parsed]
    assert names[0] == "job" and names[-1] == "done" and set(names) <= {"job", "preview", "done"}, names
    assert all(data["id"] == job["id"] and data["result"] is None for name, data in parsed if name == "job")
    final = parsed[-1][1]
    assert final["status"] == "done" and final["result_status"] == 200
    assert b64_image(final["result"]["data"][0]["b64_json"]).size == (256, 256)


def test_cancelling_a_queued_job(server: Server) -> None:
    running = submit(server, server.alice, SLOW_BODY)
    server.wait_job(running["id"], server.alice, "running")
    queued = submit(server, server.alice, quick())
    assert server.job(queued["id"], server.alice)["status"] == "queued", "one worker, busy"
    assert server.job(queued["id"], server.alice)["queue_position"] == 1

    cancelled = server.request("DELETE", f"/v1/jobs/{queued['id']}", token=server.alice)
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["status"], body["error"]) == ("cancelled", "cancelled")
    assert body["error_message"] == "Cancelled by its owner before it started."
    assert (body["result_status"], body["result"], body["attempts"]) == (None, None, 0)
    again = server.request("DELETE", f"/v1/jobs/{queued['id']}", token=server.alice)
    assert again.status_code == 200 and again.json()["status"] == "cancelled", "a finished job is answered unchanged"

    assert server.request("DELETE", f"/v1/jobs/{running['id']}", token=server.alice).json()["status"] == "cancelled"
    assert server.engine.requests == [], "the queued job never ran"
    assert server.balance("alice") == START_BALANCE


def test_cancelling_a_running_job_refunds_its_hold(server: Server) -> None:
    job = submit(server, server.alice, SLOW_BODY)
    server.wait_job(job["id"], server.alice, "running")
    wait_until(lambda: server.balance("alice") == START_BALANCE - PRICE, what="the credit hold")

    cancelled = server.request("DELETE", f"/v1/jobs/{job['id']}", token=server.alice)
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["status"], body["error"], body["result"]) == ("cancelled", "cancelled", None)
    assert body["error_message"] == "Cancelled by its owner."
    assert server.balance("alice") == START_BALANCE, "the hold was refunded"
    wait_until(lambda: server.usage("alice"), what="the usage row")
    assert [(row.status, row.cost) for row in server.usage("alice")] == [(499, 0)]
    assert server.job(job["id"], server.alice)["status"] == "cancelled"

    after = submit(server, server.alice, quick())
    assert server.wait_job(after["id"], server.alice)["status"] == "done", "the worker is free again"


# --- webhooks --------------------------------------------------------------------------------------


def secret(server: Server, consumer: str) -> str:
    db = server.app.state.limner.accounts.db
    with db.read() as session:
        return WebhookSecrets(server_secret(server.app.state.limner.settings)).current(session, consumer)


def delivered(server: Server, job_id: str, token: str) -> dict[str, Any]:
    """The job once its first webhook delivery is no longer pending."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(server.job(job_id, token))
        hook = seen["webhook"]
        return bool(hook and hook["deliveries"] and hook["deliveries"][0]["state"] != "pending")

    wait_until(done, what=f"the webhook of {job_id}")
    return seen


def test_a_webhook_reports_the_end_signed(server: Server, receiver: Receiver) -> None:
    url = receiver.url + "/ok"
    job = submit(server, server.alice, quick(), {"Limner-Webhook-Url": url})
    assert job["webhook"] == {"url": url, "deliveries": []}
    final = delivered(server, job["id"], server.alice)
    delivery = final["webhook"]["deliveries"][0]
    assert (delivery["type"], delivery["state"]) == ("job.done", "delivered")
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [204]

    arrived = [r for r in receiver.at("/ok") if r.headers["webhook-id"] == delivery["event_id"]]
    assert len(arrived) == 1
    payload = arrived[0].verify(secret(server, "alice"))
    assert (payload["type"], payload["data"]["id"], payload["data"]["status"]) == ("job.done", job["id"], "done")
    assert b64_image(payload["data"]["result"]["data"][0]["b64_json"]).size == (256, 256)
    with pytest.raises(Exception, match=r"(?i)signature"):
        arrived[0].verify(secret(server, "bob"))


def test_the_consumers_default_webhook_is_used(server: Server, receiver: Receiver) -> None:
    carol = server.token_for("carol-hooked")
    db = server.app.state.limner.accounts.db
    with db.write() as session:
        row = session.scalars(select(Consumer).where(Consumer.name == "carol-hooked")).one()
        configure_consumer(session, row, url=receiver.url + "/ok")
    job = submit(server, carol, quick())
    final = delivered(server, job["id"], carol)
    assert final["webhook"]["url"] == receiver.url + "/ok"
    event_id = final["webhook"]["deliveries"][0]["event_id"]
    arrived = [r for r in receiver.at("/ok") if r.headers["webhook-id"] == event_id]
    assert arrived[0].verify(secret(server, "carol-hooked"))["data"]["id"] == job["id"]


def test_a_failed_delivery_is_retried(server: Server, receiver: Receiver) -> None:
    job = submit(server, server.alice, quick(), {"Limner-Webhook-Url": receiver.url + "/flaky"})
    delivery = delivered(server, job["id"], server.alice)["webhook"]["deliveries"][0]
    assert delivery["state"] == "delivered"
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 200]
    tries = [r for r in receiver.at("/flaky") if r.headers["webhook-id"] == delivery["event_id"]]
    assert len(tries) == 2 and tries[0].body == tries[1].body, "the same event, byte for byte"
    assert tries[1].verify(secret(server, "alice"))["data"]["id"] == job["id"]


def test_a_cancelled_job_reports_too(server: Server, receiver: Receiver) -> None:
    job = submit(server, server.alice, SLOW_BODY, {"Limner-Webhook-Url": receiver.url + "/ok"})
    server.wait_job(job["id"], server.alice, "running")
    server.request("DELETE", f"/v1/jobs/{job['id']}", token=server.alice)
    delivery = delivered(server, job["id"], server.alice)["webhook"]["deliveries"][0]
    assert (delivery["type"], delivery["state"]) == ("job.cancelled", "delivered")
    arrived = [r for r in receiver.at("/ok") if r.headers["webhook-id"] == delivery["event_id"]]
    assert arrived[0].verify(secret(server, "alice"))["data"]["status"] == "cancelled"


def test_a_webhook_needs_prefer(server: Server, receiver: Receiver) -> None:
    response = server.post(
        "/v1/images/generations", token=server.alice, json=quick(), headers={"Limner-Webhook-Url": receiver.url + "/ok"}
    )
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_value")
    assert message == "Limner-Webhook-Url needs 'Prefer: respond-async': a webhook reports an async job's end."
    assert response.json()["error"]["param"] == "Limner-Webhook-Url"
    assert server.engine.requests == []


def test_a_private_webhook_url_is_refused_unless_allowed(settings: Settings, receiver: Receiver) -> None:
    with durable_server(durable_settings(settings, webhook_allow_private=False)) as server:
        for url, why in (
            (receiver.url + "/ok", f"refusing to send to {receiver.url}/ok: address 127.0.0.1 is loopback"),
            ("http://10.0.0.1/hook", "refusing to send to http://10.0.0.1/hook: address 10.0.0.1 is private"),
            ("ftp://example.com/hook", "unsupported URL scheme 'ftp'; use http or https"),
        ):
            response = server.post(
                "/v1/images/generations", token=server.alice, json=quick(), headers={**ASYNC, "Limner-Webhook-Url": url}
            )
            assert error_of(response) == (400, "invalid_value", f"Limner-Webhook-Url: {why}")
            assert response.json()["error"]["param"] == "Limner-Webhook-Url"
        assert server.get("/v1/jobs", token=server.alice).json()["data"] == []
        assert server.engine.requests == []


def test_tokens_are_never_kept_with_a_job(server: Server) -> None:
    """The stored request has no credentials: a job's body and list never show the token, nor its row."""
    job = submit(server, server.alice, quick())
    server.wait_job(job["id"], server.alice)
    for path in (f"/v1/jobs/{job['id']}", "/v1/jobs", f"/v1/jobs/{job['id']}/events"):
        assert server.alice not in server.get(path, token=server.alice).text
    db = server.app.state.limner.accounts.db
    with db.read() as session:
        from limner.accounts.models import JobRecord

        row = session.get(JobRecord, job["id"])
        assert row is not None and server.alice not in (row.answer or "") + json.dumps(row.response_headers)
