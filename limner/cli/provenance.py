"""``limner provenance check FILE|URL``: whether an image carries Content Credentials and limner's invisible
watermark, and what they say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

provenance_app = typer.Typer(help="Content Credentials (C2PA) on images.", no_args_is_help=True)


@provenance_app.command("check")
def provenance_check(
    source: Annotated[str, typer.Argument(help="An image file, or an http(s) URL of one (a limner media link)")],
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON")] = False,
    payload: Annotated[
        str,
        typer.Option(
            "--watermark-payload",
            envvar="LIMNER_INVISIBLE_WATERMARK_PAYLOAD",
            help="The invisible watermark's payload to look for",
        ),
    ] = "limner",
    method: Annotated[
        str,
        typer.Option(
            "--watermark-method",
            envvar="LIMNER_INVISIBLE_WATERMARK",
            help="dwtDct or dwtDctSvd, as the server marks (off: dwtDct)",
        ),
    ] = "dwtDct",
) -> None:
    """Print whether a C2PA manifest is present and valid, who signed it, its actions and ingredients, and
    whether the invisible watermark is found. Exit status (of the manifest): 0 valid, 1 invalid, 2 none or
    unreadable."""
    from limner.media.provenance import Report, describe, read, signed_format

    data = _fetch(source) if source.startswith(("http://", "https://")) else _read_file(Path(source))
    mime = signed_format(data)
    report = read(data, mime) if mime is not None else Report(present=False)
    watermark, line = _watermark(data, payload, "dwtDct" if method == "off" else method)
    if as_json:
        typer.echo(json.dumps({**report.__dict__, "watermark": watermark}, indent=2))
    else:
        typer.echo(f"{describe(report)}\n{line}")
    if not report.present:
        raise typer.Exit(2)
    if report.state not in ("Valid", "Trusted"):
        raise typer.Exit(1)


def _watermark(data: bytes, payload: str, method: str) -> tuple[dict[str, Any], str]:
    """The invisible watermark's reading of ``data``, as JSON fields and as one line."""
    import io

    from PIL import Image, UnidentifiedImageError

    from limner.media.watermark import InvisibleWatermark, WatermarkError, describe

    try:
        mark = InvisibleWatermark(payload, method)  # type: ignore[arg-type]  # checked by InvisibleWatermark
    except WatermarkError as exc:
        return {"checked": False, "reason": str(exc)}, f"invisible watermark: not checked ({exc})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            detection = mark.detect(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        reason = f"not an image Pillow can read: {exc}"
        return {"checked": False, "reason": reason}, f"invisible watermark: not checked ({reason})"
    fields = {
        "checked": detection.readable,
        "found": detection.found,
        "method": detection.method,
        "payload": detection.payload,
        "bits": detection.bits,
        "matching": detection.matching,
    }
    return fields, describe(detection)


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
