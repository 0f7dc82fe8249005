"""``limner tokens|credits|consumers|usage``: accounts from the terminal, on the server's own database.

They read the same settings as ``limner serve`` (``LIMNER_DATABASE_URL``, or SQLite in
``LIMNER_DATA_DIR``), so run them where the server runs or point them at its PostgreSQL. Changes take
effect on the running server's next request: no restart, no cache.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from limner.accounts import consumers, credits, tokens, usage
from limner.accounts.db import Database
from limner.accounts.models import LedgerEntry, from_micros, to_micros
from limner.cli.database import run
from limner.cli.jobs import report
from limner.cli.webhooks import consumer_webhook_settings
from limner.service.job_cancel import revoke_token
from limner.service.webhooks import queue_webhook

tokens_app = typer.Typer(help="Bearer tokens: create, list, revoke, rotate.", no_args_is_help=True)
credits_app = typer.Typer(help="Consumer balances: grant, show, unlimited.", no_args_is_help=True)
consumers_app = typer.Typer(help="Consumers and their rate limits.", no_args_is_help=True)
usage_app = typer.Typer(help="What each consumer used.")

Rpm = Annotated[int | None, typer.Option("--rpm", help="Requests per minute per model (0: server default)")]
Ipm = Annotated[int | None, typer.Option("--ipm", help="Images per minute per model (0: server default)")]
Expires = Annotated[str | None, typer.Option("--expires", help="30d, 12h, 90m, an ISO date; default: never")]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _credits(micros: int | None) -> str:
    value = from_micros(micros)
    return "unlimited" if value is None else f"{value:g}"


def _after(entry: LedgerEntry) -> str:
    """The balance after a ledger row: a charge moves none (its credits left at ``reserve``), so it shows
    '-'; only ``unmeter`` rows leave the consumer unlimited."""
    if entry.balance_after is None:
        return "unlimited" if entry.kind == "unmeter" else "-"
    return _credits(entry.balance_after)


def _show_issued(issued: tokens.IssuedToken) -> None:
    typer.echo(f"token {issued.id} for {issued.consumer} (prefix {issued.prefix}), expires {_when(issued.expires_at)}")
    typer.echo("Store it now; it is shown only this once:")
    typer.echo(issued.token)


@tokens_app.command("create")
def tokens_create(
    consumer: Annotated[str, typer.Option("--consumer", "-c", help="Consumer name (created if new)")],
    expires: Expires = None,
    rpm: Rpm = None,
    ipm: Ipm = None,
    label: Annotated[str, typer.Option(help="A note to recognise the token by")] = "",
) -> None:
    """Create a token; --rpm/--ipm set the consumer's limits."""
    issued = run(
        lambda db: tokens.create_token(
            db, consumer, expires_at=tokens.parse_expiry(expires), label=label, rpm=rpm, ipm=ipm
        )
    )
    _show_issued(issued)


@tokens_app.command("list")
def tokens_list(
    consumer: Annotated[str | None, typer.Option("--consumer", "-c", help="Only this consumer's")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include revoked and expired tokens")] = False,
) -> None:
    """List tokens (never their secrets)."""
    rows = run(lambda db: tokens.list_tokens(db, consumer))
    typer.echo(
        f"{'id':>4}  {'prefix':<12}  {'consumer':<20}  {'status':<8}  {'created':<16}  {'expires':<16}  "
        f"{'last used':<16}  label"
    )
    for info in rows:
        status = info.status()
        if status != "active" and not all_:
            continue
        rotated = f" (replaces {info.rotated_from_id})" if info.rotated_from_id else ""
        typer.echo(
            f"{info.id:>4}  {info.prefix:<12}  {info.consumer:<20}  {status:<8}  {_when(info.created_at):<16}  "
            f"{_when(info.expires_at):<16}  {_when(info.last_used_at):<16}  {info.label}{rotated}"
        )


@tokens_app.command("revoke")
def tokens_revoke(ident: Annotated[str, typer.Argument(help="Token id or prefix (lim_...)")]) -> None:
    """Revoke a token; refused from the next request on, and its unfinished async jobs cancelled."""
    info, views = run(lambda db: revoke_token(db, ident, on_finished=queue_webhook))
    typer.echo(f"revoked token {info.id} ({info.prefix}) of {info.consumer}")
    typer.echo(report(views))


@tokens_app.command("rotate")
def tokens_rotate(
    ident: Annotated[str, typer.Argument(help="Token id or prefix to replace")],
    expires: Expires = None,
) -> None:
    """Create a replacement; the old token stays active until you revoke it."""
    issued = run(lambda db: tokens.rotate_token(db, ident, expires_at=tokens.parse_expiry(expires)))
    _show_issued(issued)
    typer.echo(
        f"token {issued.rotated_from_id} still works: move clients, then `limner tokens revoke "
        f"{issued.rotated_from_id}`",
        err=True,
    )


@credits_app.command("grant")
def credits_grant(
    consumer: Annotated[str, typer.Argument()],
    amount: Annotated[float, typer.Argument(help="Credits to add; to take some back: grant NAME -- -5")],
    note: Annotated[str, typer.Option(help="Ledger note")] = "",
) -> None:
    """Add credits; the first grant starts metering the consumer."""
    balance = run(lambda db: credits.grant(db, consumer, to_micros(amount), note=note))
    typer.echo(f"{consumer}: balance {_credits(balance)}")


@credits_app.command("show")
def credits_show(
    consumer: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option(help="Ledger entries to show")] = 20,
) -> None:
    """A consumer's balance and newest ledger entries."""

    def load(db: Database) -> tuple[int | None, list[tuple[str, str, str, str, str]]]:
        entries = credits.ledger(db, consumer, limit=limit)
        rows = [(_when(e.created_at), e.kind, _credits(e.delta), _after(e), e.request_id or e.note) for e in entries]
        return credits.balance(db, consumer), rows

    balance, rows = run(load)
    typer.echo(f"{consumer}: balance {_credits(balance)}")
    for when, kind, delta, after, what in rows:
        typer.echo(f"  {when}  {kind:<8} {delta:>10}  -> {after:<10} {what}")


@credits_app.command("unlimited")
def credits_unlimited(consumer: Annotated[str, typer.Argument()]) -> None:
    """Stop metering a consumer (no balance, no 402)."""
    run(lambda db: credits.set_unmetered(db, consumer))
    typer.echo(f"{consumer}: unlimited")


@consumers_app.command("list")
def consumers_list() -> None:
    """Consumers with their limits, balances and active tokens."""
    rows = run(consumers.list_consumers)
    typer.echo(f"{'name':<20}  {'balance':>10}  {'rpm':>6}  {'ipm':>6}  tokens")
    for info in rows:
        typer.echo(
            f"{info.name:<20}  {_credits(info.balance):>10}  {info.rpm or '-':>6}  {info.ipm or '-':>6}  "
            f"{info.active_tokens}"
        )


@consumers_app.command("create")
def consumers_create(name: Annotated[str, typer.Argument()], rpm: Rpm = None, ipm: Ipm = None) -> None:
    """Create a consumer (tokens create makes one too)."""
    run(lambda db: consumers.create_consumer(db, name, rpm=rpm, ipm=ipm))
    typer.echo(f"created {name}")


@consumers_app.command("limits")
def consumers_limits(name: Annotated[str, typer.Argument()], rpm: Rpm = None, ipm: Ipm = None) -> None:
    """Change a consumer's per-model rate limits."""
    info = run(lambda db: consumers.set_limits(db, name, rpm=rpm, ipm=ipm))
    typer.echo(f"{name}: rpm {info.rpm or 'default'}, ipm {info.ipm or 'default'}")


@consumers_app.command("access")
def consumers_access(
    name: Annotated[str, typer.Argument()],
    max_priority: Annotated[int, typer.Option("--max-priority", help="Highest Limner-Priority it may ask")] = 0,
    start_deadline: Annotated[
        float | None, typer.Option("--start-deadline", help="Seconds a request may wait to start, unless it says")
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated catalog ids it may use (unset: every model)")
    ] = None,
    loras: Annotated[
        str | None, typer.Option("--loras", help="Comma-separated LoRA names it may use (unset: every adapter)")
    ] = None,
) -> None:
    """Set a consumer's priority ceiling, default start deadline and allowed models and LoRA adapters."""
    info = run(
        lambda db: consumers.set_access(
            db,
            name,
            max_priority=max_priority,
            start_deadline=start_deadline,
            models=_names(models),
            loras=_names(loras),
        )
    )
    access = info.access
    typer.echo(
        f"{name}: max priority {access.max_priority}, start deadline "
        f"{f'{access.start_deadline:g} s' if access.start_deadline else 'none'}, models "
        f"{', '.join(access.models) if access.models is not None else 'all'}, LoRAs "
        f"{', '.join(access.loras) if access.loras is not None else 'all'}"
    )


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [name.strip() for name in value.split(",") if name.strip()]


@consumers_app.command("webhook")
def consumers_webhook(
    name: Annotated[str, typer.Argument()],
    url: Annotated[str | None, typer.Option("--url", help="Where this consumer's async jobs report by default")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the default webhook URL")] = False,
    rotate_secret: Annotated[
        bool,
        typer.Option(
            "--rotate-secret",
            help="Replace the signing secret (events are signed with the old one too for the grace period)",
        ),
    ] = False,
) -> None:
    """Show or set a consumer's default webhook URL and its signing secret (whsec_...)."""
    if url is not None and clear:
        typer.echo("error: give --url or --clear, not both", err=True)
        raise typer.Exit(1)
    shown = consumer_webhook_settings(name, url=url, clear=clear, rotate=rotate_secret)
    typer.echo(f"{name}: webhook {shown.url or 'none (set one with --url)'}")
    typer.echo(f"secret: {shown.secret}")
    if shown.previous is not None:
        secret, until = shown.previous
        typer.echo(f"previous secret, signed with too until {_when(until)} UTC: {secret}")
    if rotate_secret:
        typer.echo(
            "events carry signatures by both secrets until then (LIMNER_WEBHOOK_SECRET_GRACE_HOURS): "
            "give receivers the new one before",
            err=True,
        )


@usage_app.callback(invoke_without_command=True)
def usage_show(
    consumer: Annotated[str | None, typer.Option("--consumer", "-c", help="Only this consumer")] = None,
    since: Annotated[str | None, typer.Option(help="24h, 7d, or an ISO date")] = None,
    records: Annotated[int, typer.Option("--records", "-n", help="Also list this many newest requests")] = 0,
) -> None:
    """Totals per consumer and model (requests, failures, images, seconds, credits)."""

    def load(db: Database) -> tuple[list[usage.UsageSummary], list[str]]:
        moment = usage.parse_since(since)
        lines = [
            f"  {_when(r.created_at)}  {r.consumer:<16} {r.model:<24} {r.dialect:<10} {r.status} "
            f"{r.error_code or '':<20} {r.images} img {r.seconds:.2f}s {_credits(r.cost)}"
            for r in (usage.records(db, consumer=consumer, since=moment, limit=records) if records else [])
        ]
        return usage.summary(db, consumer=consumer, since=moment), lines

    summary, lines = run(load)
    typer.echo(
        f"{'consumer':<16}  {'model':<24}  {'requests':>8}  {'failed':>6}  {'images':>6}  {'seconds':>8}  "
        f"{'credits':>8}"
    )
    for s in summary:
        typer.echo(
            f"{s.consumer:<16}  {s.model:<24}  {s.requests:>8}  {s.failed:>6}  {s.images:>6}  "
            f"{s.seconds:>8.1f}  {_credits(s.cost):>8}"
        )
    for line in lines:
        typer.echo(line)
