"""Credits and usage through the live server: no overdraft under 50 simultaneous requests (SQLite and
PostgreSQL), refunds on engine failure and on client disconnect, recovery of a killed process's
reservations, 402 with ``required``, prices scaled by size and quality, and a record of every request."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
from sqlalchemy import select

from limner.accounts import consumers, credits
from limner.accounts.models import MICROS, Reservation, to_micros, utcnow
from limner.accounts.service import Accounts
from limner.settings import Settings
from tests.accounts.helpers import balance, generate, make_app, provision, usage_rows
from tests.support.accounts import bearer
from tests.support.live_server import live_server
from tests.support.waiting import until, wait_until


def test_fifty_simultaneous_requests_against_ten_credits_charge_exactly_ten(
    priced: Settings, database_url: str
) -> None:
    settings = priced.with_overrides(database_url=database_url)
    token = provision(settings, "alice", balance=10)
    app = make_app(settings)

    async def burst(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=120, limits=limits) as client:
            body = {"prompt": "a cat", "model": "pattern", "size": "64x64", "response_format": "b64_json"}
            return await asyncio.gather(*(client.post("/v1/images/generations", json=body) for _ in range(50)))

    with live_server(app) as url:
        responses = asyncio.run(burst(url))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 10, 429: 40}, statuses
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"insufficient_quota"}
    db = app.state.limner.accounts.db
    try:  # the ledger is read after the server stopped: close those connections too
        assert balance(app, "alice") == 0
        rows = usage_rows(app)
        assert len(rows) == 50
        assert sum(r.cost for r in rows) == 10 * MICROS
        assert Counter(r.error_code for r in rows) == {None: 10, "insufficient_credits": 40}
        with db.read() as session:
            assert set(session.scalars(select(Reservation.state))) == {"committed"}
        assert [e.balance_after for e in credits.ledger(db, "alice", limit=100) if e.kind == "reserve"].count(0) == 1
    finally:
        db.dispose()


def test_engine_failure_is_refunded_and_recorded(priced: Settings) -> None:
    token = provision(priced, "alice", balance=5)
    app = make_app(priced)
    with live_server(app) as url:
        failed = generate(url, token, model="broken", n=2)
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "model_error"
        assert generate(url, token, n=2).status_code == 200
    assert balance(app, "alice") == 3 * MICROS
    kinds = [e.kind for e in credits.ledger(app.state.limner.accounts.db, "alice")]
    assert kinds == ["charge", "reserve", "refund", "reserve", "grant"]
    broken, ok = usage_rows(app)
    assert (broken.model, broken.status, broken.error_code, broken.cost, broken.images) == (
        "broken",
        502,
        "model_error",
        0,
        0,
    )
    assert (ok.status, ok.cost, ok.images, ok.pixels, ok.dialect) == (200, 2 * MICROS, 2, 2 * 64 * 64, "openai")


def test_client_disconnect_is_refunded(priced: Settings) -> None:
    token = provision(priced, "alice", balance=5)
    app = make_app(priced)
    jobs = app.state.limner.service.jobs
    headers = {**bearer(token), "X-Request-Id": "leaves-early-1"}

    async def leave_once_it_runs(url: str) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"prompt": "x", "model": "pattern-slow", "size": "64x64"}
            call = asyncio.create_task(client.post(url + "/v1/images/generations", json=body, headers=headers))
            await until(lambda: getattr(jobs.get("alice", "leaves-early-1"), "state", None) == "running")
            call.cancel()  # the client hangs up mid-generation
            await asyncio.gather(call, return_exceptions=True)

    with live_server(app) as url:
        asyncio.run(leave_once_it_runs(url))
        wait_until(lambda: usage_rows(app), what="the request's usage row")
        engine = app.state.limner.catalog.engine(app.state.limner.catalog.resolve("pattern-slow"))
    assert balance(app, "alice") == 5 * MICROS
    [row] = usage_rows(app)
    assert (row.status, row.error_code, row.cost) == (499, "client_closed", 0)
    job = jobs.get("alice", "leaves-early-1")
    assert job is not None and job.state == "cancelled", "the generation was cancelled, not run to the end"
    assert engine.calls == 1
    assert [e.kind for e in credits.ledger(app.state.limner.accounts.db, "alice")] == ["refund", "reserve", "grant"]
    metrics = app.state.limner.metrics.render().decode()
    assert 'limner_http_requests_total{dialect="shared_paths",method="POST",status="499"} 1.0' in metrics
    assert 'limner_errors_total{code="client_closed"} 1.0' in metrics


def test_reservations_of_a_killed_process_are_recovered_at_startup_and_periodically(priced: Settings) -> None:
    settings = priced.with_overrides(reservation_sweep_seconds=0.2)
    provision(settings, "alice", balance=5)
    crashed = Accounts.open(settings)  # the process that died mid-request
    cid = consumers.policy(crashed.db, "alice").consumer_id
    assert cid is not None
    credits.reserve(
        crashed.db, cid, to_micros(2), model="pattern", request_id="killed", ttl=60, now=utcnow() - timedelta(hours=1)
    )
    assert credits.balance(crashed.db, "alice") == 3 * MICROS
    app = make_app(settings)
    with live_server(app):
        assert balance(app, "alice") == 5 * MICROS, "recovered before the first request is served"
        credits.reserve(crashed.db, cid, to_micros(1), model="pattern", request_id="killed-later", ttl=0.1)
        wait_until(lambda: balance(app, "alice") == 5 * MICROS, what="recovery by the periodic sweep while serving")
    crashed.db.dispose()


def test_short_balance_answers_402_with_required_in_milady_and_quota_in_openai(priced: Settings) -> None:
    token = provision(priced, "alice", balance=1.5)
    app = make_app(priced)
    with live_server(app) as url:
        milady = httpx.post(
            url + "/api/v1/generate-image",
            headers=bearer(token),
            json={"prompt": "x", "model": "pattern", "numImages": 2},
        )
        openai_style = generate(url, token, n=2)
    assert milady.status_code == 402
    assert milady.json()["required"] == 2.0
    assert openai_style.status_code == 429 and openai_style.json()["error"]["code"] == "insufficient_quota"
    assert balance(app, "alice") == to_micros(1.5)


def test_price_scales_with_size_and_quality_and_unmetered_consumers_are_free_to_go(priced: Settings) -> None:
    token = provision(priced, "alice", balance=100)
    free = provision(priced, "bob")
    app = make_app(priced)
    with live_server(app) as url:
        assert generate(url, token, size="512x512").status_code == 200  # x2
        assert generate(url, token, size="512x512", quality="hd").status_code == 200  # x2 x3
        assert generate(url, token, model="pattern-free").status_code == 200  # no price
        for _ in range(3):
            assert generate(url, free, n=3).status_code == 200
    assert balance(app, "alice") == to_micros(100 - 2 - 6)
    assert balance(app, "bob") is None
    bob = [r for r in usage_rows(app) if r.consumer == "bob"]
    assert [r.cost for r in bob] == [3 * MICROS] * 3, "unmetered usage still records what it would cost"
    assert {r.token_id for r in bob} != {None}


def test_admission_comes_before_decoding_input_images(priced: Settings) -> None:
    """Model checks and rate limits refuse a request before its images are decoded or fetched: a refused
    request with a corrupt image says what refused it, not that the image is corrupt."""
    token = provision(priced, "hasty", rpm=1)
    corrupt = {"image": ("broken.png", b"\x89PNG\r\n\x1a\n not really a png", "image/png")}

    def edit(url: str, model: str) -> httpx.Response:
        data = {"model": model, "prompt": "x", "size": "256x256"}
        return httpx.post(url + "/v1/images/edits", headers=bearer(token), data=data, files=corrupt, timeout=30)

    with live_server(make_app(priced)) as url:
        unknown = edit(url, "no-such-model")
        first = edit(url, "pattern")  # admitted (the one request a minute), then refused for its image
        limited = edit(url, "pattern")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert first.status_code == 400 and first.json()["error"]["code"] == "invalid_image"
    assert "image: not a valid image file" in first.json()["error"]["message"]
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
