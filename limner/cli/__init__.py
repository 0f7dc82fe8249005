"""The ``limner`` command: serve, list models, and generate from the terminal through the same service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer

from limner.cli import accounts as cli_accounts
from limner.cli import cluster as cli_cluster
from limner.cli import jobs as cli_jobs
from limner.cli import provenance as cli_provenance
from limner.cli import ray as cli_ray
from limner.cli import webhooks as cli_webhooks
from limner.media.provenance import ProvenanceError
from limner.media.watermark import WatermarkError
from limner.settings import ConfigError, load_settings

OUTPUT_FORMATS: dict[str, Literal["png", "jpeg", "webp"]] = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

app = typer.Typer(help="limner: a self-hosted image-generation API server.", no_args_is_help=True)
app.add_typer(cli_accounts.tokens_app, name="tokens")
app.add_typer(cli_accounts.credits_app, name="credits")
app.add_typer(cli_accounts.consumers_app, name="consumers")
app.add_typer(cli_accounts.usage_app, name="usage")
app.add_typer(cli_ray.ray_app, name="ray")
app.add_typer(cli_cluster.dev_app, name="dev")
app.add_typer(cli_webhooks.webhooks_app, name="webhooks")
app.add_typer(cli_provenance.provenance_app, name="provenance")


def main() -> None:
    """The ``limner`` command; a configuration that does not load is one line naming the key, not a traceback."""
    try:
        app()
    except (ConfigError, ProvenanceError, WatermarkError) as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None


app.add_typer(cli_jobs.jobs_app, name="jobs")


@app.command()
def models(
    url: Annotated[
        str | None, typer.Option(help="A running server (http://127.0.0.1:8000): show which models it has loaded")
    ] = None,
) -> None:
    """List the catalog: ids, aliases, engines and whether each model's weights are present."""
    settings = load_settings()
    if url is not None:
        _print_residency(url, settings.secret("metrics_token"))
        return
    for entry in settings.models:
        present = "" if entry.path is None or entry.path.exists() else "  (weights missing)"
        default = " [default]" if entry.id == settings.default_model else ""
        typer.echo(f"{entry.id}{default}  engine={entry.engine}{present}")
        if entry.aliases:
            typer.echo(f"    aliases: {', '.join(entry.aliases)}")


def _print_residency(url: str, token: str | None) -> None:
    """What ``GET /limner/models`` says: each model loaded or not, its size and how long it has been idle."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(url.rstrip("/") + "/limner/models", headers=headers, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot read {url}/limner/models: {exc}", err=True)
        raise typer.Exit(1) from None
    body = response.json()
    for model in body["models"]:
        if model["in_flight"]:
            state = f"in use ({model['in_flight']} requests)"
        elif not model["loaded"]:
            state = "not loaded"
        elif model["idle_seconds"] is None:
            state = "loaded"
        else:
            state = f"loaded, idle {model['idle_seconds']:.0f} s"
        size = f"  {model['resident_bytes'] / 2**20:.1f} MB" if model["resident_bytes"] else ""
        typer.echo(f"{model['id']}  engine={model['engine']}  {state}{size}")
    idle = body["idle_unload_seconds"]
    budget = body["memory_budget_bytes"]
    typer.echo(
        f"unload after: {f'{idle:g} s idle' if idle else 'never'}; "
        f"memory budget: {f'{budget / 2**20:g} MB' if budget else 'none'}"
    )


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the image")] = Path("image.png"),
    model: Annotated[str | None, typer.Option(help="Model id or alias")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible output")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps")] = None,
    style: Annotated[str | None, typer.Option(help="Style preset")] = None,
) -> None:
    """Generate one image locally, through the same service the server uses."""
    from limner.app import build_state
    from limner.core.errors import LimnerError
    from limner.core.models import ImageRequest, SizeSpec
    from limner.core.sizes import parse_size

    settings = load_settings()
    state = build_state(settings)
    parsed = parse_size(size) if size else None
    request = ImageRequest(
        prompt=prompt,
        model=model or settings.default_model,
        dialect="cli",
        size=SizeSpec(*parsed) if parsed else SizeSpec(),
        seed=seed,
        steps=steps,
        style=style,
        output_format=OUTPUT_FORMATS.get(output.suffix.lower(), "png"),
    )

    async def run() -> None:
        try:
            result = await state.service.run(request, "cli")
        finally:
            await state.catalog.aclose()
        output.write_bytes(result.images[0].data)
        image = result.images[0]
        typer.echo(f"wrote {output} ({image.width}x{image.height}, seed {image.seed}, {result.seconds:.2f} s)")

    try:
        asyncio.run(run())
    except LimnerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


from limner.cli.pull import pull  # noqa: E402  (commands in their own modules register here, one stanza each)
from limner.cli.serve import serve  # noqa: E402

app.command()(serve)
app.command()(pull)
