"""Webhooks of async jobs: signed deliveries checked by the Standard Webhooks reference library at a real
receiver on 127.0.0.1, retries on the 4x backoff schedule, giving up, the attempt log, secret rotation,
claims shared by two senders, and the SSRF checks at submission and at send time."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from limner.accounts import consumers
from limner.accounts.db import Database, default_url
from limner.accounts.models import Consumer, JobRecord, WebhookAttempt, WebhookDelivery, utcnow
from limner.accounts.service import Accounts
from limner.core.errors import InvalidRequest
from limner.service.webhooks import (
    WebhookSecrets,
    WebhookSender,
    check_webhook_url,
    configure_consumer,
    consumer_webhook,
    delivery_log,
    enqueue,
    sign,
)
from limner.settings import Settings
from tests.support.waiting import until
from tests.support.webhook_receiver import Receiver, webhook_receiver

SECRETS = WebhookSecrets(b"a server secret of at least 32 bytes")
JOB = {"id": "job_1", "object": "job", "status": "done", "result": {"created": 1, "data": []}}
PARAM = "Limner-Webhook-Url"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The accounts database, once on SQLite and once on a real PostgreSQL (claims are conditional UPDATEs)."""
    url = default_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    accounts = Accounts.open(Settings(data_dir=tmp_path, database_url=url))
    yield accounts.db
    accounts.db.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def owe(db: Database, url: str, *, job_id: str = "job_1", consumer: str = "alice", event: str = "job.done") -> str:
    """A finished job owing ``url`` an event, as the job store writes it; the event id."""
    with db.write() as session:
        if consumer != consumers.LOCAL:
            consumers.ensure(session, consumer)
        if session.get(JobRecord, job_id) is None:
            session.add(
                JobRecord(
                    id=job_id,
                    consumer=consumer,
                    fingerprint="0" * 64,
                    method="POST",
                    path="/v1/images/generations",
                    status="done",
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
            session.flush()
        enqueue(session, job_id=job_id, consumer=consumer, url=url, event_type=event, data={**JOB, "id": job_id})
    with db.read() as session:
        return str(session.scalars(select(WebhookDelivery.event_id).order_by(WebhookDelivery.id.desc())).first())


def sender(db: Database, **options: Any) -> WebhookSender:
    settings: dict[str, Any] = {"timeout": 5.0, "retry_seconds": 0.5, "max_attempts": 3, "allow_private": True}
    return WebhookSender(db, SECRETS, **{**settings, **options})


def delivery(db: Database, event_id: str) -> WebhookDelivery:
    with db.read() as session:
        row = session.scalar(select(WebhookDelivery).where(WebhookDelivery.event_id == event_id))
        assert row is not None
        return row


def attempts(db: Database, event_id: str) -> list[WebhookAttempt]:
    with db.read() as session:
        return list(
            session.scalars(
                select(WebhookAttempt)
                .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                .where(WebhookDelivery.event_id == event_id)
                .order_by(WebhookAttempt.id)
            )
        )


def make_due(db: Database) -> None:
    """Skip the wait before the next try (what the backoff tests read is the schedule, not the clock)."""
    with db.write() as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.state == "pending").values(next_attempt_at=utcnow())
        )


def secret_of(db: Database, consumer: str = "alice") -> str:
    with db.read() as session:
        return SECRETS.current(session, consumer)


async def test_a_delivery_is_signed_the_standard_webhooks_way(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/ok")

    assert await sender(db).deliver_due() == 1

    [got] = receiver.at("/ok")
    payload = got.verify(secret_of(db))
    assert payload["type"] == "job.done" and payload["data"] == JOB
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None and payload["timestamp"].endswith("Z")
    assert got.headers["webhook-id"] == event_id and event_id.startswith("msg_")
    assert got.headers["content-type"] == "application/json"
    assert json.loads(got.body) == payload
    with db.read() as session:
        [logged] = delivery_log(session, "job_1")
    assert logged["event_id"] == event_id and logged["type"] == "job.done" and logged["state"] == "delivered"
    [attempt] = logged["attempts"]
    assert attempt["status_code"] == 204 and attempt["error"] is None and attempt["seconds"] >= 0
    assert abs(attempt["at"] - utcnow().timestamp()) < 3600
    assert delivery(db, event_id).delivered_at is not None
    assert await sender(db).deliver_due() == 0  # delivered: never sent again


async def test_a_failed_try_is_retried_with_the_same_event_id(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/flaky")
    webhooks = sender(db)

    assert await webhooks.deliver_due() == 1
    assert delivery(db, event_id).state == "pending"
    assert await webhooks.deliver_due() == 0  # not due until the backoff has passed
    make_due(db)
    assert await webhooks.deliver_due() == 1

    first, second = receiver.at("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert first.verify(secret_of(db)) == second.verify(secret_of(db))
    with db.read() as session:
        [logged] = delivery_log(session, "job_1")
    assert logged["state"] == "delivered"
    assert [(a["status_code"], a["error"]) for a in logged["attempts"]] == [(500, None), (200, None)]


async def test_backoff_is_four_times_longer_each_try_then_it_gives_up(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/fail")
    webhooks = sender(db, retry_seconds=0.5, max_attempts=4)

    for n, expected in enumerate([0.5, 2.0, 8.0], start=1):
        assert await webhooks.deliver_due() == 1
        row, last = delivery(db, event_id), attempts(db, event_id)[-1]
        assert (row.state, row.attempts, last.status_code) == ("pending", n, 500)
        ended = last.attempted_at + timedelta(seconds=last.seconds)
        assert abs((row.next_attempt_at - ended).total_seconds() - expected) < 0.001
        make_due(db)
    assert await webhooks.deliver_due() == 1

    row = delivery(db, event_id)
    assert (row.state, row.attempts, row.delivered_at) == ("failed", 4, None)
    assert len(receiver.at("/fail")) == 4
    make_due(db)
    assert await webhooks.deliver_due() == 0  # failed for good
    with db.read() as session:
        [logged] = delivery_log(session, "job_1")
    assert logged["state"] == "failed" and [a["status_code"] for a in logged["attempts"]] == [500] * 4


def test_the_wait_between_tries_is_capped(tmp_path: Path) -> None:
    webhooks = WebhookSender(
        Database(default_url(tmp_path)), SECRETS, timeout=1, retry_seconds=5, max_attempts=100, allow_private=False
    )
    assert [webhooks.retry_delay(n) for n in (1, 2, 3, 8)] == [5, 20, 80, 5 * 4**7]
    assert webhooks.retry_delay(60) == 86_400


async def test_a_receiver_that_does_not_answer_times_out(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/hang")

    assert await sender(db, timeout=0.3).deliver_due() == 1

    [attempt] = attempts(db, event_id)
    assert (attempt.status_code, attempt.error) == (None, "timed out after 0.3 s")
    assert delivery(db, event_id).state == "pending"


async def test_a_refused_connection_is_a_failed_try(db: Database) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed on exit: nothing listens there
    event_id = owe(db, f"http://127.0.0.1:{port}/hook")

    assert await sender(db, max_attempts=1).deliver_due() == 1

    [attempt] = attempts(db, event_id)
    assert (attempt.status_code, attempt.error) == (None, "could not connect")
    assert delivery(db, event_id).state == "failed"


async def test_redirects_are_not_followed(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/redirect")

    await sender(db).deliver_due()

    assert [a.status_code for a in attempts(db, event_id)] == [307]
    assert receiver.at("/ok") == [] and delivery(db, event_id).state == "pending"


async def test_a_rotation_signs_with_both_secrets_during_the_grace_period(db: Database, receiver: Receiver) -> None:
    owe(db, receiver.url + "/ok", job_id="job_1")
    await sender(db).deliver_due()
    old = secret_of(db)
    rotated_at = utcnow()
    with db.write() as session:
        new = SECRETS.rotate(session, "alice", now=rotated_at)
    assert new != old and new == secret_of(db) and new.startswith("whsec_")

    owe(db, receiver.url + "/ok", job_id="job_2")
    await sender(db, clock=lambda: rotated_at + timedelta(hours=23, minutes=59)).deliver_due()
    owe(db, receiver.url + "/ok", job_id="job_3")
    await sender(db, clock=lambda: rotated_at + timedelta(hours=24)).deliver_due()

    before, during, after = receiver.at("/ok")
    assert before.verify(old)["data"]["id"] == "job_1"
    assert len(before.headers["webhook-signature"].split(" ")) == 1
    assert len(during.headers["webhook-signature"].split(" ")) == 2, "v1,<new> v1,<old>"
    assert during.verify(new)["data"]["id"] == during.verify(old)["data"]["id"] == "job_2", "a receiver on either"
    assert after.verify(new)["data"]["id"] == "job_3"
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        after.verify(old)


async def test_secrets_do_not_follow_the_server_secret(db: Database, receiver: Receiver) -> None:
    """A consumer's secret is its own, stored: a new media signing key signs its webhooks as before. One from
    before secrets were stored keeps its derived secret, pinned at the first start (``pin_all``)."""
    with db.write() as session:
        consumers.ensure(session, "alice")
        consumers.ensure(session, "older")
        session.execute(  # as migration 0005 leaves a consumer that existed before it
            update(Consumer).where(Consumer.name == "older").values(webhook_secret=None, webhook_secret_version=2)
        )
    alice = secret_of(db)
    assert alice not in {SECRETS.legacy_secret("alice", n) for n in (1, 2)}, "random, not derived"
    assert secret_of(db, "older") == SECRETS.legacy_secret("older", 2), "what it was before the upgrade"
    assert SECRETS.pin_all(db) == 1 and SECRETS.pin_all(db) == 0

    rotated_key = WebhookSecrets(b"the media signing key, rotated: 32+ bytes")
    alices = owe(db, receiver.url + "/ok", job_id="job_1")
    olders = owe(db, receiver.url + "/ok", job_id="job_2", consumer="older")
    await WebhookSender(
        db, rotated_key, timeout=5.0, retry_seconds=0.5, max_attempts=3, allow_private=True
    ).deliver_due()

    arrived = {r.headers["webhook-id"]: r for r in receiver.at("/ok")}
    assert arrived[alices].verify(alice)["data"]["id"] == "job_1"
    assert arrived[olders].verify(SECRETS.legacy_secret("older", 2))["data"]["id"] == "job_2"
    with db.read() as session:
        assert rotated_key.current(session, "alice") == alice
        assert rotated_key.current(session, "older") == SECRETS.legacy_secret("older", 2)


def test_legacy_secrets_are_derived_per_consumer_and_version() -> None:
    secret = SECRETS.legacy_secret("alice", 1)
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret == WebhookSecrets(b"a server secret of at least 32 bytes").legacy_secret("alice", 1)
    others = {
        SECRETS.legacy_secret("bob", 1),
        SECRETS.legacy_secret("alice", 2),
        WebhookSecrets(b"x" * 32).legacy_secret("alice", 1),
    }
    assert secret not in others and len(others) == 3
    assert "server secret" not in repr(SECRETS)


def test_sign_matches_the_reference_library() -> None:
    secret = SECRETS.legacy_secret("alice", 1)
    body = b'{"type":"job.done"}'
    timestamp = int(utcnow().timestamp())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp)}
    signature = sign(secret, "msg_1", timestamp, body)
    assert signature.startswith("v1,")
    assert Webhook(secret).verify(body, {**headers, "webhook-signature": signature}) == {"type": "job.done"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", {**headers, "webhook-signature": signature})


async def test_the_local_consumer_without_a_row_keeps_its_secret(db: Database, receiver: Receiver) -> None:
    owe(db, receiver.url + "/ok", consumer="local")
    await sender(db).deliver_due()
    [got] = receiver.at("/ok")
    assert got.verify(SECRETS.legacy_secret("local", 1))["type"] == "job.done"
    with db.read() as session:  # stored on first use: a new server secret no longer changes it
        assert WebhookSecrets(b"y" * 32).current(session, "local") == SECRETS.legacy_secret("local", 1)


async def test_two_senders_never_send_the_same_try(db: Database, receiver: Receiver) -> None:
    ids = [owe(db, receiver.url + "/ok", job_id=f"job_{n}") for n in range(12)]
    first, second = sender(db, batch=5), sender(db, batch=5)

    tried = 0
    while (counts := await asyncio.gather(first.deliver_due(), second.deliver_due())) != [0, 0]:
        tried += sum(counts)

    assert tried == 12
    assert sorted(r.headers["webhook-id"] for r in receiver.at("/ok")) == sorted(ids)
    assert {delivery(db, event_id).state for event_id in ids} == {"delivered"}
    assert all(len(attempts(db, event_id)) == 1 for event_id in ids)


async def test_run_forever_delivers_until_cancelled(db: Database, receiver: Receiver) -> None:
    event_id = owe(db, receiver.url + "/ok")
    webhooks = sender(db)
    task = asyncio.create_task(webhooks.run_forever(0.01))
    try:
        await until(lambda: delivery(db, event_id).state == "delivered", what="the delivery")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await webhooks.aclose()
    assert len(receiver.at("/ok")) == 1


async def test_enqueue_commits_or_rolls_back_with_the_job(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as session:
        session.add(
            JobRecord(id="job_x", consumer="alice", fingerprint="0", method="POST", path="/", expires_at=utcnow())
        )
        enqueue(
            session, job_id="job_x", consumer="alice", url="https://hooks.example/x", event_type="job.done", data={}
        )
        raise RuntimeError("the job's transaction failed")
    with db.read() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []
        assert delivery_log(session, "job_x") == []
        assert consumer_webhook(session, "nobody") is None


async def test_a_consumer_default_url(db: Database) -> None:
    with db.write() as session:
        consumer, _ = consumers.ensure(session, "alice")
        configure_consumer(session, consumer, url="https://hooks.example/alice")
    with db.read() as session:
        assert consumer_webhook(session, "alice") == "https://hooks.example/alice"
    with db.write() as session:
        configure_consumer(session, consumers.find(session, "alice"), clear=True)
    with db.read() as session:
        assert consumer_webhook(session, "alice") is None
        assert session.scalar(select(Consumer.webhook_secret_version).where(Consumer.name == "alice")) == 1


@pytest.mark.parametrize(
    ("url", "address", "problem"),
    [
        ("http://127.0.0.1:8080/hook?token=t", "127.0.0.1", "loopback"),
        ("https://10.1.2.3/hook", "10.1.2.3", "private"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254", "link-local"),
        ("http://[::1]:9000/hook", "::1", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "::ffff:a00:1", "private"),  # IPv4 hidden in IPv6
    ],
)
async def test_private_addresses_are_refused_at_submission(url: str, address: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await check_webhook_url(url, allow_private=False)
    shown = url.split("?", 1)[0]
    assert caught.value.message == f"{PARAM}: refusing to send to {shown}: address {address} is {problem}"
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "invalid_request", PARAM)
    assert await check_webhook_url(url, allow_private=True) == url


async def name_resolves_to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def name_resolves_to_nothing(host: str, port: int) -> list[str]:
    return []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example/x", "unsupported URL scheme 'ftp'; use http or https"),
        ("/relative/hook", "not a valid URL (use an absolute http or https URL)"),
        ("https://hooks.example/" + "x" * 2048, "URL longer than 2048 characters"),
        (
            "https://rebind.example/hook",
            "refusing to send to https://rebind.example/hook: address 127.0.0.1 is loopback",
        ),
    ],
)
async def test_other_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await check_webhook_url(url, allow_private=False, resolver=name_resolves_to_loopback)
    assert (caught.value.message, caught.value.param) == (f"{PARAM}: {message}", PARAM)


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        await check_webhook_url("https://nowhere.example/x", allow_private=True, resolver=name_resolves_to_nothing)
    assert caught.value.message == f"{PARAM}: could not resolve host nowhere.example"


async def test_a_public_address_is_allowed() -> None:
    url = "https://93.184.215.14/hook"  # a literal: no resolution, no connection
    assert await check_webhook_url(url, allow_private=False) == url


async def test_the_address_is_checked_again_at_send_time(db: Database, receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    event_id = owe(db, f"http://hooks.example:{port}/ok?token=secret-query")

    await sender(db, allow_private=False, resolver=name_resolves_to_loopback).deliver_due()

    [attempt] = attempts(db, event_id)
    assert attempt.status_code is None
    assert attempt.error == f"refusing to send to http://hooks.example:{port}/ok: address 127.0.0.1 is loopback"
    assert receiver.received == []


async def test_a_try_connects_to_the_vetted_address(
    db: Database, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The name is resolved once and the connection goes to that address, with the name in ``Host``."""
    port = receiver.url.rsplit(":", 1)[1]
    event_id = owe(db, f"http://hooks.example:{port}/ok?token=secret-query")

    with caplog.at_level(logging.DEBUG, logger="limner"):
        await sender(db, resolver=name_resolves_to_loopback).deliver_due()

    [got] = receiver.at("/ok")
    assert got.headers["host"] == f"hooks.example:{port}"
    assert got.verify(secret_of(db))["type"] == "job.done"
    assert delivery(db, event_id).state == "delivered"
    assert f"http://hooks.example:{port}/ok" in caplog.text
    assert "secret-query" not in caplog.text and secret_of(db) not in caplog.text


def test_the_first_start_stores_older_consumers_secrets(tmp_path: Path) -> None:
    """The upgrade: a server starting on a database from before stores each consumer's derived secret, so a
    media signing key rotated afterwards leaves it alone."""
    from fastapi.testclient import TestClient

    from limner.app import create_app
    from limner.service.webhooks import server_secret

    settings = Settings(data_dir=tmp_path / "data", models=[])
    accounts = Accounts.open(settings)
    try:
        with accounts.db.write() as session:
            consumers.ensure(session, "older")
            session.execute(update(Consumer).where(Consumer.name == "older").values(webhook_secret=None))
    finally:
        accounts.db.dispose()
    derived = WebhookSecrets(server_secret(settings)).legacy_secret("older", 1)

    with TestClient(create_app(settings)):
        pass

    accounts = Accounts.open(settings)
    try:
        with accounts.db.read() as session:
            stored = session.scalar(select(Consumer.webhook_secret).where(Consumer.name == "older"))
            assert stored == derived
            assert WebhookSecrets(b"a rotated media signing key, 32 bytes").current(session, "older") == derived
    finally:
        accounts.db.dispose()
