"""``limner provenance check FILE|URL``: whether an image carries Content Credentials, and what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

provenance_app = typer.Typer(help="Content Credentials (C2PA) on images.", no_args_is_help=True)


@provenance_app.command("check")
def provenance_check(
    source: Annotated[str, typer.Argument(help="An image file, or an http(s) URL of one (a limner media link)")],
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON")] = False,
) -> None:
    """Print whether a C2PA manifest is present and valid, who signed it, its actions and ingredients.
    Exit status: 0 valid, 1 invalid, 2 none or unreadable."""
    from limner.media.provenance import as_json as report_json
    from limner.media.provenance import describe, read, signed_format

    data = _fetch(source) if source.startswith(("http://", "https://")) else _read_file(Path(source))
    mime = signed_format(data)
    report = read(data, mime) if mime is not None else None
    if report is None:
        from limner.media.provenance import Report

        report = Report(present=False)
    typer.echo(report_json(report) if as_json else describe(report))
    if not report.present:
        raise typer.Exit(2)
    if report.state not in ("Valid", "Trusted"):
        raise typer.Exit(1)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None


def _fetch(url: str) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=30.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot fetch {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    return response.content
