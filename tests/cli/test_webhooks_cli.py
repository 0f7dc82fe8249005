"""``limner consumers webhook`` and ``limner webhooks test`` on a temporary data dir, against a real receiver
on 127.0.0.1 that checks signatures with the Standard Webhooks reference library."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import WebhookVerificationError
from typer.testing import CliRunner, Result

from limner.accounts.models import Consumer
from limner.accounts.service import Accounts
from limner.cli import app
from limner.media.signing import load_or_create_secret
from limner.service.webhook_secrets import WebhookSecrets
from limner.settings import Settings
from tests.support.webhook_receiver import Receiver, webhook_receiver


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIMNER_CONFIG", "/nonexistent/limner.toml")
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LIMNER_WEBHOOK_ALLOW_PRIVATE", "true")  # the receiver is on loopback
    monkeypatch.delenv("LIMNER_SIGNING_SECRET", raising=False)
    return tmp_path / "data"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def limner(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def shown_secret(result: Result) -> str:
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("secret: ")]
    secret = line.removeprefix("secret: ")
    assert secret.startswith("whsec_")
    return secret


def test_a_consumer_webhook_is_set_shown_and_cleared(data_dir: Path, receiver: Receiver) -> None:
    assert limner("consumers", "create", "alice").exit_code == 0
    shown = limner("consumers", "webhook", "alice")
    assert shown.stdout.splitlines()[0] == "alice: webhook none (set one with --url)"
    secret = shown_secret(shown)

    changed = limner("consumers", "webhook", "alice", "--url", receiver.url + "/ok")
    assert changed.stdout.splitlines()[0] == f"alice: webhook {receiver.url}/ok"
    assert shown_secret(changed) == secret  # setting a URL keeps the secret

    cleared = limner("consumers", "webhook", "alice", "--clear")
    assert cleared.stdout.splitlines()[0] == "alice: webhook none (set one with --url)"


def test_the_test_event_verifies_with_the_shown_secret(data_dir: Path, receiver: Receiver) -> None:
    assert limner("consumers", "create", "alice").exit_code == 0
    secret = shown_secret(limner("consumers", "webhook", "alice"))

    result = limner("webhooks", "test", receiver.url + "/ok", "--consumer", "alice")

    assert result.exit_code == 0, result.output
    [got] = receiver.at("/ok")
    assert result.stdout.startswith(f"HTTP 204 from {receiver.url}/ok in ")
    assert f"(webhook-id {got.headers['webhook-id']})" in result.stdout
    payload = got.verify(secret)
    assert payload["type"] == "webhook.test" and payload["data"]["consumer"] == "alice"


def test_rotating_keeps_the_old_secret_for_the_grace_period(
    data_dir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert limner("consumers", "create", "alice").exit_code == 0
    old = shown_secret(limner("consumers", "webhook", "alice"))

    rotated = limner("consumers", "webhook", "alice", "--rotate-secret")
    new = shown_secret(rotated)
    assert new != old
    [previous] = [line for line in rotated.stdout.splitlines() if line.startswith("previous secret")]
    assert previous.startswith("previous secret, signed with too until ") and previous.endswith(f" UTC: {old}")
    assert "events carry signatures by both secrets until then" in rotated.stderr
    assert shown_secret(limner("consumers", "webhook", "alice")) == new

    assert limner("webhooks", "test", receiver.url + "/ok", "--consumer", "alice").exit_code == 0
    monkeypatch.setenv("LIMNER_WEBHOOK_SECRET_GRACE_HOURS", "0")  # the grace period over
    assert limner("webhooks", "test", receiver.url + "/ok", "--consumer", "alice").exit_code == 0
    assert "previous secret" not in limner("consumers", "webhook", "alice").stdout

    during, after = receiver.at("/ok")
    assert during.verify(new)["type"] == during.verify(old)["type"] == "webhook.test"
    assert after.verify(new)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        after.verify(old)


def test_the_local_consumer_needs_no_row(data_dir: Path, receiver: Receiver) -> None:
    secret = shown_secret(limner("consumers", "webhook", "local"))
    assert limner("webhooks", "test", receiver.url + "/ok").exit_code == 0
    [got] = receiver.at("/ok")
    assert got.verify(secret)["data"]["consumer"] == "local"


def test_rotating_the_signing_key_keeps_webhook_secrets(
    data_dir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhook secrets are the consumers' own: a new media signing key (configured, or a new ``signing.key``)
    leaves every one of them, including the open ``local`` consumer's, verifying as before."""
    assert limner("consumers", "create", "alice").exit_code == 0
    alice = shown_secret(limner("consumers", "webhook", "alice"))
    local = shown_secret(limner("consumers", "webhook", "local"))
    assert (data_dir / "signing.key").exists()

    monkeypatch.setenv("LIMNER_SIGNING_SECRET", "a configured secret, the same on every replica")
    assert shown_secret(limner("consumers", "webhook", "alice")) == alice
    assert shown_secret(limner("consumers", "webhook", "local")) == local
    assert limner("webhooks", "test", receiver.url + "/ok", "--consumer", "alice").exit_code == 0
    assert limner("webhooks", "test", receiver.url + "/ok").exit_code == 0
    first, second = receiver.at("/ok")
    assert first.verify(alice)["data"]["consumer"] == "alice"
    assert second.verify(local)["data"]["consumer"] == "local"


def test_a_consumer_from_before_keeps_its_derived_secret(data_dir: Path, receiver: Receiver) -> None:
    """An upgrade: a consumer whose secret was derived from the signing key gets the same one, stored."""
    assert limner("consumers", "create", "older").exit_code == 0
    accounts = Accounts.open(Settings(data_dir=data_dir))
    try:
        with accounts.db.write() as session:  # as migration 0005 leaves a consumer that existed before it
            session.execute(update(Consumer).where(Consumer.name == "older").values(webhook_secret=None))
    finally:
        accounts.db.dispose()
    derived = WebhookSecrets(load_or_create_secret(data_dir)).legacy_secret("older", 1)

    assert shown_secret(limner("consumers", "webhook", "older")) == derived
    (data_dir / "signing.key").write_bytes(b"r" * 32)  # the signing key rotated after the upgrade
    assert shown_secret(limner("consumers", "webhook", "older")) == derived


def test_private_urls_are_refused_unless_allowed(
    data_dir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIMNER_WEBHOOK_ALLOW_PRIVATE", "false")
    assert limner("consumers", "create", "alice").exit_code == 0
    refusal = f"error: refusing to send to {receiver.url}/ok: address 127.0.0.1 is loopback\n"

    for args in (
        ["webhooks", "test", receiver.url + "/ok?key=k"],
        ["consumers", "webhook", "alice", "--url", receiver.url + "/ok"],
    ):
        result = limner(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal)
    assert receiver.received == []
    assert limner("consumers", "webhook", "alice").stdout.startswith("alice: webhook none")


def test_a_receiver_error_exits_1(data_dir: Path, receiver: Receiver) -> None:
    result = limner("webhooks", "test", receiver.url + "/fail")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: HTTP 500 from {receiver.url}/fail in ")
    assert len(receiver.at("/fail")) == 1


def test_a_refused_connection_exits_1(data_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = limner("webhooks", "test", f"http://127.0.0.1:{port}/hook")
    assert (result.exit_code, result.stderr) == (1, f"error: http://127.0.0.1:{port}/hook: could not connect\n")


def test_mistakes_are_one_line_errors(data_dir: Path) -> None:
    unknown = limner("consumers", "webhook", "nobody")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: No consumer named 'nobody'.\n")
    unknown_test = limner("webhooks", "test", "http://127.0.0.1:9/x", "--consumer", "nobody")
    assert (unknown_test.exit_code, unknown_test.stderr) == (1, "error: No consumer named 'nobody'.\n")
    both = limner("consumers", "webhook", "local", "--url", "https://hooks.example/x", "--clear")
    assert (both.exit_code, both.stderr) == (1, "error: give --url or --clear, not both\n")
    scheme = limner("webhooks", "test", "ftp://hooks.example/x")
    assert (scheme.exit_code, scheme.stderr) == (
        1,
        "error: unsupported URL scheme 'ftp'; use http or https\n",
    )


def test_the_installed_command_sends_a_test_event(data_dir: Path, receiver: Receiver) -> None:
    """The real entry point, in its own process: ``limner webhooks`` is registered."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "limner.cli", "webhooks", "test", receiver.url + "/ok"]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"HTTP 204 from {receiver.url}/ok in ")
    secret = shown_secret(limner("consumers", "webhook", "local"))
    assert receiver.at("/ok")[0].verify(secret)["type"] == "webhook.test"
