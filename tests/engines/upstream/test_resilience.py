"""The small pieces: redaction, ``Retry-After``, backoff, the breaker's states, shape choices, credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from limner.engines.catalog import ModelEntry
from limner.engines.upstream.credentials import load_credential
from limner.engines.upstream.resilience import MESSAGE_LIMIT, CircuitBreaker, backoff_delay, parse_retry_after, redact
from limner.engines.upstream.shapes import nearest_ratio, nearest_size, resolution_preset


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Incorrect API key provided: sk-proj-abc123***wxyz.", "Incorrect API key provided: [redacted]"),
        ('bad {"api_key": "hunter2hunter2"} here', 'bad {"[redacted]"} here'),
        ("Authorization: Bearer abc.def.ghi", "[redacted]"),
        ("use ?key=AIzaSyA1234567890abcdefghij", "use ?[redacted]"),
        ("Field 'prompt' is required", "Field 'prompt' is required"),
        ("line\x00one\x1btwo", "line one two"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_known_secrets_and_length() -> None:
    assert redact("the key is pw-123 ok", ["pw-123"]) == "the key is [redacted] ok"
    assert len(redact("word " * 200)) == MESSAGE_LIMIT


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=lambda: now) == pytest.approx(30.0)


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    for attempt, step in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 8.0)):
        delays = [backoff_delay(attempt, 1.0, 8.0) for _ in range(50)]
        assert all(step / 2 <= delay <= step for delay in delays)
        assert len(set(delays)) > 1


def test_breaker_closed_open_half_open() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.blocked_for() == 0 and not breaker.is_open
    breaker.failure()
    assert breaker.is_open and breaker.blocked_for() == 10.0
    now[0] = 10.5
    assert breaker.blocked_for() == 0  # the probe
    assert breaker.blocked_for() > 0  # everyone else waits for it
    breaker.failure()  # the probe failed: open again at once
    assert breaker.is_open and breaker.blocked_for() == pytest.approx(10.0)
    now[0] = 21.0
    assert breaker.blocked_for() == 0
    breaker.success()
    assert breaker.failures == 0 and breaker.blocked_for() == 0 and breaker.blocked_for() == 0


def test_shapes() -> None:
    assert nearest_ratio(1792, 1024, ("1:1", "16:9", "4:3")) == "16:9"
    assert nearest_ratio(1024, 1792, ("1:1", "16:9", "9:16")) == "9:16"
    assert nearest_size(1344, 768, ((1024, 1024), (1792, 1024), (1024, 1792))) == (1792, 1024)
    assert resolution_preset(1024, 1024) == "1K" and resolution_preset(2048, 1536) == "2K"


def test_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMNER_TEST_CRED", " from-env \n")
    assert load_credential(ModelEntry(id="a", engine="openai", api_key_env="LIMNER_TEST_CRED")).value == "from-env"
    assert load_credential(ModelEntry(id="a", engine="openai")).value is None
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    entry = ModelEntry(id="a", engine="openai", api_key_env="LIMNER_TEST_UNSET", api_key_file=secret)
    monkeypatch.delenv("LIMNER_TEST_UNSET", raising=False)
    loaded = load_credential(entry)
    assert loaded.value == "from-file" and "from-file" not in repr(loaded)
    missing = load_credential(ModelEntry(id="a", engine="openai", api_key_file=tmp_path / "nope"))
    assert missing.value is None and missing.problem and "FileNotFoundError" in missing.problem
