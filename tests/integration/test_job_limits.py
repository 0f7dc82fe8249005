"""A consumer cannot queue async jobs without bound: past ``job_queue_per_consumer`` it gets a 429."""

from __future__ import annotations

import httpx

from limner.app import create_app
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.live_server import live_server


def test_a_consumer_past_its_pending_jobs_gets_a_429_and_room_again_after_a_cancel(settings: Settings) -> None:
    slow = ModelEntry(id="slow", engine="testpattern", options={"delay": 30.0}, max_queue=8)
    tuned = settings.with_overrides(
        models=[*settings.models, slow], job_queue_per_consumer=2, job_workers=1, job_poll_seconds=0.05
    )
    body = {"prompt": "a snail", "model": "slow", "size": "64x64"}
    async_ = {"Prefer": "respond-async"}
    with live_server(create_app(tuned)) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.post("/v1/images/generations", json=body, headers=async_)
        second = client.post("/v1/images/generations", json=body, headers=async_)
        assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)

        refused = client.post("/v1/images/generations", json=body, headers=async_)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["message"] == (
            "You have 2 async jobs queued or running, the most one consumer may; submit more when some have finished."
        )
        assert refused.headers["retry-after"] == "5"
        listed = client.get("/v1/jobs").json()["data"]
        assert {job["id"] for job in listed} == {first.json()["id"], second.json()["id"]}, "nothing queued for it"
        for cursor in ("", "job_unknown"):
            unknown = client.get("/v1/jobs", params={"after": cursor})
            assert unknown.status_code == 400, unknown.text
            assert unknown.json()["error"]["param"] == "after"
            assert unknown.json()["error"]["message"] == (
                f"Unknown job id '{cursor}' in 'after': pass the last id of the previous page."
            )

        # A synchronous request is not an async job: it is not refused by that count.
        assert client.post("/v1/images/generations", json={"prompt": "a leaf", "size": "64x64"}).status_code == 200

        cancelled = client.delete(f"/v1/jobs/{second.json()['id']}")
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        again = client.post("/v1/images/generations", json=body, headers=async_)
        assert again.status_code == 202, again.text
        for job in (first.json()["id"], again.json()["id"]):
            assert client.delete(f"/v1/jobs/{job}").json()["status"] == "cancelled"
