"""``limner jobs cancel``: stop async jobs from the terminal, by consumer or by id, on the server's own database.

Queued jobs end at once (with their ``job.cancelled`` webhook event) and never run; running ones are
flagged, and the server running each stops it within ``job_poll_seconds`` and refunds its hold (a server
that is down ends it as cancelled when it, or another replica, recovers its jobs).
"""

from __future__ import annotations

from typing import Annotated

import typer

from limner.accounts import consumers
from limner.accounts.db import Database
from limner.cli.database import run
from limner.service import job_cancel
from limner.service.job_shapes import JobView
from limner.service.webhooks import queue_webhook

jobs_app = typer.Typer(help="Async jobs: cancel a consumer's, or some by id.", no_args_is_help=True)


def report(views: list[JobView]) -> str:
    """One line: how many jobs ended, and how many were told to stop."""
    cancelled = sum(view.status == "cancelled" for view in views)
    stopping = sum(view.status == "running" for view in views)
    return f"cancelled {cancelled} queued job(s); {stopping} running job(s) told to stop (refunded when they do)"


@jobs_app.command("cancel")
def jobs_cancel(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids (job_...)", show_default=False)] = None,
    consumer: Annotated[
        str | None, typer.Option("--consumer", "-c", help="Every unfinished job of this consumer")
    ] = None,
) -> None:
    """Cancel async jobs that have not finished: a consumer's (--consumer), or these ids."""
    if not job_ids and consumer is None:
        typer.echo("error: name job ids, or a consumer with --consumer", err=True)
        raise typer.Exit(1)

    def action(db: Database) -> list[JobView]:
        if consumer is not None:
            consumers.get_consumer(db, consumer)  # a typo is an error, not "0 jobs"
        return job_cancel.cancel_jobs(db, consumer=consumer, job_ids=job_ids or (), on_finished=queue_webhook)

    views = run(action)
    for view in views:
        state = "cancelled" if view.status == "cancelled" else "stopping"
        typer.echo(f"{view.id}  {view.consumer:<20}  {state}")
    typer.echo(report(views))
