"""``limner webhooks test``, and what ``limner consumers webhook`` shows and changes.

Both read the consumer's secret from the server's database (a consumer from before secrets were stored
gets its old one, derived from ``LIMNER_SIGNING_SECRET`` or ``signing.key`` in ``LIMNER_DATA_DIR``, stored
on first use), so a secret shown here verifies the server's events; the test event is signed as the
server signs, with the previous secret too during a rotation's grace period.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from limner.accounts import consumers
from limner.accounts.db import Database
from limner.cli.database import run
from limner.core.errors import LimnerError
from limner.media.fetch import safe_url
from limner.service.webhooks import (
    WebhookPoster,
    WebhookSecrets,
    check_webhook_url,
    configure_consumer,
    consumer_webhook,
    event_body,
    new_event_id,
)
from limner.settings import Settings, load_settings

webhooks_app = typer.Typer(help="Webhooks of async jobs: send a signed test event.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _checked(url: str, settings: Settings) -> str:
    """``url`` if the server would send to it (``LIMNER_WEBHOOK_ALLOW_PRIVATE`` honoured), else exit 1."""
    try:
        return asyncio.run(check_webhook_url(url, allow_private=settings.webhook_allow_private))
    except LimnerError as error:  # the header's name means nothing on a command line
        raise _fail(error.message.removeprefix(f"{error.param}: ")) from None


def _known(session: Session, name: str) -> None:
    """Unknown names are errors (a typo must not pass), except the open ``local`` consumer, which has no row."""
    if name != consumers.LOCAL:
        consumers.find(session, name)


@dataclass(frozen=True)
class Shown:
    """What ``limner consumers webhook`` prints."""

    url: str | None
    secret: str
    previous: tuple[str, datetime] | None
    """The secret before the last rotation, and until when events are signed with it too."""


def consumer_webhook_settings(name: str, *, url: str | None, clear: bool, rotate: bool) -> Shown:
    """Apply the changes asked for, then the consumer's default URL and secrets."""
    settings = load_settings()
    checked = _checked(url, settings) if url is not None else None
    secrets = WebhookSecrets.from_settings(settings)

    def action(db: Database) -> Shown:
        with db.write() as session:
            _known(session, name)
            consumer = secrets.pin(session, name)  # a consumer from before keeps its secret from now on
            configure_consumer(session, consumer, url=checked, clear=clear)
            if rotate:
                secrets.rotate(session, name)
        with db.read() as session:
            return Shown(
                consumer_webhook(session, name), secrets.current(session, name), secrets.previous_until(session, name)
            )

    return run(action)


@webhooks_app.command("test")
def webhooks_test(
    url: Annotated[str, typer.Argument(help="The receiver (http or https)")],
    consumer: Annotated[str, typer.Option("--consumer", "-c", help="Sign with this consumer's secret")] = "local",
) -> None:
    """POST a signed ``webhook.test`` event to URL and print the receiver's answer (exit 1 unless 2xx)."""
    settings = load_settings()
    checked = _checked(url, settings)
    secrets = WebhookSecrets.from_settings(settings)

    def secrets_of(db: Database) -> list[str]:
        with db.write() as session:
            _known(session, consumer)
            return secrets.signing(session, consumer)

    signing = run(secrets_of)
    event_id = new_event_id()
    body = event_body("webhook.test", {"consumer": consumer, "message": "a test event from limner webhooks test"})

    poster = WebhookPoster(timeout=settings.webhook_timeout_seconds, allow_private=settings.webhook_allow_private)
    outcome = asyncio.run(poster.post(checked, event_id, body, signing))
    where = safe_url(checked)
    if outcome.error is not None:
        raise _fail(f"{where}: {outcome.error}")
    answer = f"HTTP {outcome.status_code} from {where} in {outcome.seconds:.2f} s (webhook-id {event_id})"
    if not outcome.ok:
        raise _fail(answer)
    typer.echo(answer)
