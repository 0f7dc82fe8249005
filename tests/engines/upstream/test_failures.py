"""Every provider, every way to fail: retries, backoff, the circuit breaker, cancellation, and
error mapping that never lets the credential out."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from tenacity import RetryCallState

from limner.core.errors import ModelAuthError, ModelError, ModelNotAvailable, RateLimited, Timeout
from limner.engines.catalog import ModelEntry
from limner.engines.upstream import UpstreamCall
from limner.engines.upstream.base import UpstreamEngine
from limner.engines.upstream.resilience import CircuitBreaker
from tests.engines.upstream.conftest import PROVIDERS, Fake, request
from tests.engines.upstream.fakes.common import KEY, KEY_ENV
from tests.support.clock import FakeClock
from tests.support.waiting import until

MakeEngine = Callable[[ModelEntry], UpstreamEngine]
ALL = list(PROVIDERS)


@pytest.mark.parametrize("name", ALL)
async def test_server_errors_are_retried_then_reported(
    fakes: dict[str, Fake], make_engine: MakeEngine, name: str
) -> None:
    fake = fakes[name]
    fake.control.set("fail")
    engine = make_engine(fake.entry())
    with pytest.raises(ModelError) as caught:
        await engine.generate(request())
    assert type(caught.value) is ModelError
    assert "HTTP 500" in caught.value.message and "had an error" in caught.value.message
    assert len(fake.control.posts()) == 3
    call = engine.calls[-1]
    assert (call.outcome, call.error, call.retries, call.requests, call.cost) == ("error", "model_error", 2, 3, 0)


@pytest.mark.parametrize("name", ALL)
async def test_one_failure_then_success(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("fail", times=1)
    engine = make_engine(fake.entry(price_per_image=0.04))
    images = await engine.generate(request(n=2 if name != "bfl" else 1))
    assert len(fake.control.posts()) == (3 if name in ("gemini", "aiml", "imagineart") else 2)
    call = engine.calls[-1]
    assert (call.outcome, call.retries, call.images, call.provider) == ("ok", 1, len(images), name)
    assert call.cost == pytest.approx(0.04 * len(images))


async def test_throttling_honours_retry_after(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    fake.control.set("throttle", times=1, retry_after="1")
    engine = make_engine(fake.entry())
    waits: list[float] = []
    decide = engine._wait  # what the engine tells its retry loop to sleep, recorded rather than timed

    def recorded(state: RetryCallState) -> float:
        waits.append(decide(state))
        return waits[-1]

    engine._wait = recorded  # type: ignore[method-assign]
    await engine.generate(request())
    assert waits == [1.0], "the provider's Retry-After, not the (shorter) backoff"
    assert len(fake.control.posts()) == 2


@pytest.mark.parametrize("name", ALL)
async def test_throttled_past_the_retries(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("throttle", retry_after="0")
    with pytest.raises(RateLimited, match=f"Provider '{name}' is throttling requests") as caught:
        await make_engine(fake.entry()).generate(request())
    assert caught.value.retry_after >= 1
    assert len(fake.control.posts()) == 3


async def test_a_long_retry_after_is_not_waited_for(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aiml"]
    fake.control.set("throttle", retry_after="120")
    with pytest.raises(RateLimited) as caught:
        await make_engine(fake.entry()).generate(request())
    assert caught.value.retry_after == 120
    assert len(fake.control.posts()) == 1


@pytest.mark.parametrize("name", ALL)
async def test_a_stall_is_a_timeout_and_not_retried(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("stall", stall_seconds=5.0)
    engine = make_engine(fake.entry(timeout=0.4))
    with pytest.raises(Timeout, match=r"did not answer within 0\.4 s"):
        await engine.generate(request())
    assert len(fake.control.posts()) == 1
    await until(lambda: fake.control.aborted == 1)
    assert engine.calls[-1].error == "timeout"


@pytest.mark.parametrize("name", ALL)
async def test_rejected_credentials(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("reject")
    with pytest.raises(ModelAuthError, match=f"Provider '{name}' rejected limner's credentials") as caught:
        await make_engine(fake.entry()).generate(request())
    assert KEY[:6] not in caught.value.message and KEY[-4:] not in caught.value.message
    assert len(fake.control.posts()) == 1


@pytest.mark.parametrize("name", ALL)
async def test_unknown_upstream_model(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("unknown")
    with pytest.raises(ModelNotAvailable, match="does not offer model"):
        await make_engine(fake.entry()).generate(request())
    assert len(fake.control.posts()) == 1


@pytest.mark.parametrize("name", ALL)
async def test_an_echoed_credential_is_redacted(fakes: dict[str, Fake], make_engine: MakeEngine, name: str) -> None:
    fake = fakes[name]
    fake.control.set("echo")
    with pytest.raises(ModelError) as caught:
        await make_engine(fake.entry()).generate(request())
    message = caught.value.message
    assert "HTTP 400" in message and "prompt too odd" in message and "[redacted]" in message
    assert KEY not in message and KEY[-12:] not in message


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("fault", ["garbage", "malformed"])
async def test_garbage_answers(fakes: dict[str, Fake], make_engine: MakeEngine, name: str, fault: str) -> None:
    fake = fakes[name]
    fake.control.set(fault)
    with pytest.raises(ModelError) as caught:
        await make_engine(fake.entry()).generate(request())
    assert type(caught.value) is ModelError
    words = {"garbage": "invalid image", "malformed": "malformed JSON" if name != "imagineart" else "instead of"}
    assert words[fault] in caught.value.message
    assert len(fake.control.posts()) == 1


async def test_connection_errors_are_retried(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    engine = make_engine(fakes["aigne"].entry(provider_url=closed))
    with pytest.raises(ModelError, match="Could not reach provider 'aigne' \\(ConnectError\\)"):
        await engine.generate(request())
    assert (engine.calls[-1].requests, engine.calls[-1].retries) == (3, 2)


async def test_the_breaker_opens_then_lets_a_probe_through(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    fake.control.set("fail")
    engine = make_engine(fake.entry(max_retries=0, options={"breaker_threshold": 2, "breaker_cooldown": 30}))
    assert (engine.breaker.threshold, engine.breaker.cooldown) == (2, 30)
    clock = FakeClock()
    engine.breaker = CircuitBreaker(2, 30, clock=clock)  # the same breaker, on a clock the test moves
    for _ in range(2):
        with pytest.raises(ModelError, match="HTTP 500"):
            await engine.generate(request())
    clock.advance(10)
    with pytest.raises(ModelNotAvailable, match="Provider 'openai' is failing; retry in 20 s") as caught:
        await engine.generate(request())
    assert caught.value.details["retry_after"] == 20
    assert len(fake.control.posts()) == 2
    fake.control.set(None)
    clock.advance(20)
    await engine.generate(request())
    assert len(fake.control.posts()) == 3 and engine.breaker.failures == 0


async def test_an_open_breaker_stops_retries(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["milady"]
    fake.control.set("fail")
    engine = make_engine(fake.entry(max_retries=5, options={"breaker_threshold": 2, "breaker_cooldown": 30}))
    with pytest.raises(ModelError, match="HTTP 500"):
        await engine.generate(request())
    assert len(fake.control.posts()) == 2


async def test_refusals_do_not_open_the_breaker(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aigne"]
    fake.control.set("echo", times=3)
    engine = make_engine(fake.entry(options={"breaker_threshold": 1}))
    for _ in range(3):
        with pytest.raises(ModelError, match="HTTP 400"):
            await engine.generate(request())
    await engine.generate(request())


@pytest.mark.parametrize("name", ALL)
async def test_cancelling_aborts_the_upstream_request(
    fakes: dict[str, Fake], make_engine: MakeEngine, name: str
) -> None:
    fake = fakes[name]
    fake.control.set("stall", stall_seconds=5.0)
    engine = make_engine(fake.entry())
    task = asyncio.create_task(engine.generate(request()))
    await until(lambda: len(fake.control.posts()) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: fake.control.aborted == 1, timeout=2.0)
    assert engine.calls[-1].outcome == "cancelled"


async def test_missing_credentials_fail_without_calling(
    fakes: dict[str, Fake], make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(KEY_ENV)
    fake = fakes["openai"]
    with caplog.at_level(logging.WARNING):
        engine = make_engine(fake.entry())
    assert f"environment variable {KEY_ENV} is not set" in caplog.text
    with pytest.raises(ModelAuthError, match="has no upstream credentials configured"):
        await engine.generate(request())
    assert fake.control.requests == []


async def test_a_secrets_file(
    fakes: dict[str, Fake], make_engine: MakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    secret = tmp_path / "openai.key"
    secret.write_text(KEY + "\n")
    fake = fakes["openai"]
    await make_engine(fake.entry(api_key_env=KEY_ENV, api_key_file=secret)).generate(request())
    assert fake.control.posts()[0].headers["authorization"] == f"Bearer {KEY}"


async def test_no_credential_configured_sends_none(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aigne"]
    with pytest.raises(ModelAuthError):
        await make_engine(fake.entry(api_key_env=None)).generate(request())
    assert "authorization" not in fake.control.posts()[0].headers


async def test_the_key_is_not_sent_to_another_host(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aiml"]
    fake.control.set("foreign")
    with pytest.raises(ModelError, match="media URL on another host"):
        await make_engine(fake.entry()).generate(request())


async def test_usage_records_reach_observers_once(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["gemini"]
    engine = make_engine(fake.entry(id="nano-banana", price_per_image=0.039))
    seen: list[UpstreamCall] = []
    engine.subscribe(seen.append)
    engine.subscribe(seen.append)
    await engine.generate(request(n=2))
    (call,) = seen
    assert (call.provider, call.model, call.upstream_model) == ("gemini", "nano-banana", "gemini-2.5-flash-image")
    assert (call.outcome, call.images, call.requests, call.retries) == ("ok", 2, 2, 0)
    assert call.cost == pytest.approx(0.078) and call.latency > 0 and call.started > 0
    assert KEY not in repr(engine) + repr(engine._credential) + repr(call)
