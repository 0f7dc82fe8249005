"""``limner ray``: put the catalog's ``runtime = "ray"`` models on a Ray cluster, see them, take them down.

API replicas deploy a missing model on first use by themselves; these commands let an operator do it
ahead of traffic (and from a machine with no API replica), and see what Ray Serve says about each one.
"""

from __future__ import annotations

from typing import Annotated

import typer

from limner.engines.catalog import ModelEntry
from limner.settings import load_settings

ray_app = typer.Typer(help='Models that run on Ray Serve (catalog entries with runtime = "ray").', no_args_is_help=True)


def _ray_entries(model: str | None) -> list[ModelEntry]:
    entries = [entry for entry in load_settings().models if entry.runtime == "ray"]
    if model is not None:
        entries = [entry for entry in entries if model in (entry.id, *entry.aliases)]
    if not entries:
        typer.echo('error: no catalog model with runtime = "ray"' + (f" named {model!r}" if model else ""), err=True)
        raise typer.Exit(1)
    return entries


ModelOption = Annotated[str | None, typer.Option(help="Only this catalog model (id or alias)")]


@ray_app.command()
def deploy(model: ModelOption = None) -> None:
    """Deploy (or update) each Ray model as the Serve application limner-<id> and wait until it is running."""
    from ray import serve

    from limner.engines.ray_serve import app_name, connect, deployment_for

    for entry in _ray_entries(model):
        connect(entry.ray_address)
        serve.run(deployment_for(entry).bind(entry.model_dump_json()), name=app_name(entry), route_prefix=None)
        typer.echo(f"{entry.id}: running as {app_name(entry)}")


@ray_app.command()
def status(model: ModelOption = None) -> None:
    """What Ray Serve reports for each Ray model: the application's status and its replicas by state."""
    from ray import serve

    from limner.engines.ray_serve import app_name, connect

    for entry in _ray_entries(model):
        connect(entry.ray_address)
        application = serve.status().applications.get(app_name(entry))
        if application is None:
            typer.echo(f"{entry.id}: not deployed (limner ray deploy, or the first request deploys it)")
            continue
        replicas = {
            str(getattr(state, "value", state)): count
            for deployment in application.deployments.values()
            for state, count in deployment.replica_states.items()
        }
        summary = ", ".join(f"{count} {state.lower()}" for state, count in sorted(replicas.items())) or "no replicas"
        state = getattr(application.status, "value", application.status)
        typer.echo(f"{entry.id}: {state} ({summary})")


@ray_app.command()
def delete(model: ModelOption = None) -> None:
    """Remove each Ray model's Serve application (API replicas deploy it again on their next request)."""
    from ray import serve

    from limner.engines.ray_serve import app_name, connect

    for entry in _ray_entries(model):
        connect(entry.ray_address)
        serve.delete(app_name(entry))
        typer.echo(f"{entry.id}: deleted {app_name(entry)}")
