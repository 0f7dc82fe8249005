"""Async jobs cancelled by someone other than their owner, over real HTTP: revoking a token cancels the
jobs it submitted (queued ones never run, a running one stops and is refunded), and an operator cancels a
consumer's jobs or one job by id through ``/admin`` (``limner.service.job_cancel``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.durable import PRICE, START_BALANCE, Server, base_settings, durable_server, durable_settings
from tests.support.waiting import wait_until

ADMIN = "admin-" + "c" * 30
ASYNC = {"Prefer": "respond-async"}
SLOW_BODY = {"prompt": "a slow cat", "model": "slow", "size": "256x256", "response_format": "b64_json"}
REVOKED_QUEUED = "Cancelled before it started: the token that submitted it was revoked."
REVOKED_RUNNING = "Cancelled: the token that submitted it was revoked."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One job at a time, so jobs wait in the queue behind a slow one."""
    data_dir = tmp_path_factory.mktemp("cancelling") / "data"
    settings = durable_settings(base_settings(data_dir), job_workers=1, admin_token=ADMIN)
    with durable_server(settings) as running:
        yield running


def quick(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "model": "dall-e-2", "size": "256x256", "response_format": "b64_json"}


def submit(server: Server, token: str, body: dict[str, Any]) -> str:
    response = server.post("/v1/images/generations", token=token, json=body, headers=ASYNC)
    assert response.status_code == 202, response.text[:300]
    job_id: str = response.json()["id"]
    return job_id


def admin(server: Server, path: str) -> httpx.Response:
    return httpx.post(server.url + "/admin" + path, headers=bearer(ADMIN), timeout=30)


def busy_with_slow_job(server: Server, token: str, consumer: str) -> str:
    """A slow job running (its credit held), so that later jobs stay queued."""
    slow = submit(server, token, SLOW_BODY)
    server.wait_job(slow, token, "running")
    wait_until(lambda: server.balance(consumer) == START_BALANCE - PRICE, what="the slow job's hold")
    return slow


def test_revoking_a_token_cancels_its_jobs_and_refunds(server: Server) -> None:
    server.reset()
    revoked, kept = server.token_for("carol"), server.token_for("carol")
    slow = busy_with_slow_job(server, revoked, "carol")
    queued = [submit(server, revoked, quick(f"revoked {n}")) for n in range(3)]
    other = submit(server, kept, quick("the other token's"))
    assert {server.job(job_id, kept)["status"] for job_id in [*queued, other]} == {"queued"}

    response = admin(server, f"/tokens/{revoked[:12]}/revoke")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["consumer"]) == ("revoked", "carol")
    assert (body["jobs"]["cancelled"], body["jobs"]["stopping"]) == (3, 1)
    assert [(job["id"], job["status"], job["stopping"]) for job in body["jobs"]["data"]] == [
        (slow, "running", True),
        *[(job_id, "cancelled", False) for job_id in queued],
    ]
    for job_id in queued:
        job = server.job(job_id, kept)
        assert (job["status"], job["error"], job["error_message"], job["attempts"]) == (
            "cancelled",
            "cancelled",
            REVOKED_QUEUED,
            0,
        )
    stopped = server.wait_job(slow, kept)
    assert (stopped["status"], stopped["error"], stopped["error_message"]) == (
        "cancelled",
        "cancelled",
        REVOKED_RUNNING,
    )

    assert server.wait_job(other, kept)["status"] == "done", "another token's job runs as before"
    assert [request.prompt for request in server.engine.requests] == ["the other token's"], "no revoked job ran"
    assert server.balance("carol") == START_BALANCE - PRICE, "only the other token's job was charged"
    assert [(row.status, row.cost) for row in server.usage("carol")] == [(499, 0), (200, PRICE * 10**6)]
    refused = server.post("/v1/images/generations", token=revoked, json=quick("after"), headers=ASYNC)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")


def test_an_operator_cancels_a_consumers_jobs(server: Server) -> None:
    server.reset()
    dave = server.token_for("dave")
    slow = busy_with_slow_job(server, dave, "dave")
    queued = [submit(server, dave, quick(f"dave {n}")) for n in range(2)]

    response = admin(server, "/consumers/dave/jobs/cancel")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["cancelled"], body["stopping"]) == (2, 1)
    assert [job["id"] for job in body["data"]] == [slow, *queued]
    assert {server.job(job_id, dave)["error_message"] for job_id in queued} == {
        "Cancelled by an administrator before it started."
    }
    stopped = server.wait_job(slow, dave)
    assert (stopped["status"], stopped["error_message"]) == ("cancelled", "Cancelled by an administrator.")
    assert server.balance("dave") == START_BALANCE, "the running job's hold was refunded"
    assert server.engine.requests == []
    again = admin(server, "/consumers/dave/jobs/cancel").json()
    assert (again["data"], again["cancelled"], again["stopping"]) == ([], 0, 0), "nothing left to cancel"
    assert server.wait_job(submit(server, dave, quick("dave later")), dave)["status"] == "done", "the token works"


def test_an_operator_cancels_one_job_by_id(server: Server) -> None:
    server.reset()
    slow = busy_with_slow_job(server, server.alice, "alice")
    mine, bobs = submit(server, server.alice, quick("alice's")), submit(server, server.bob, quick("bob's"))

    response = admin(server, f"/jobs/{bobs}/cancel")

    assert response.status_code == 200, response.text
    [job] = response.json()["data"]
    assert (job["id"], job["consumer"], job["status"], job["error_message"]) == (
        bobs,
        "bob",
        "cancelled",
        "Cancelled by an administrator before it started.",
    )
    assert server.job(mine, server.alice)["status"] == "queued", "only the job named"
    finished = admin(server, f"/jobs/{bobs}/cancel")
    assert finished.status_code == 200 and finished.json()["cancelled"] == 0, "a finished job is answered as it is"
    assert finished.json()["data"][0]["status"] == "cancelled"

    unknown = admin(server, "/jobs/job_000000000000000000000000/cancel")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {
            "error": {
                "code": "unknown_request",
                "message": "No async job with id 'job_000000000000000000000000'.",
                "param": "job_id",
            }
        },
    )
    nobody = admin(server, "/consumers/nobody/jobs/cancel")
    assert (nobody.status_code, nobody.json()["error"]["message"]) == (404, "No consumer named 'nobody'.")
    unauthorised = httpx.post(server.url + f"/admin/jobs/{mine}/cancel", timeout=30)
    assert (unauthorised.status_code, unauthorised.json()["error"]["code"]) == (401, "missing_bearer_token")
    assert server.job(mine, server.alice)["status"] == "queued"

    assert admin(server, f"/jobs/{slow}/cancel").json()["stopping"] == 1
    assert server.wait_job(mine, server.alice)["status"] == "done"
