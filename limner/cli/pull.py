"""``limner pull``: the terminal face of :mod:`limner.pull`, which downloads and verifies, then the catalog entry.

Kept apart from ``limner/cli.py`` so that command file stays one small stanza per command; the download and the
catalog edit live in :mod:`limner.pull` and :mod:`limner.pull.catalog_file`, so tests and other tools can call them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer


def pull(
    source: Annotated[
        str,
        typer.Argument(help="A hub repo id (stabilityai/sd-turbo) or an https URL of one .safetensors or .gguf file"),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model id in the catalog (default: the repo name)")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit of a hub repo (default main)")] = None,
    models_dir: Annotated[
        Path | None, typer.Option(help="Where models go (default: the models_dir setting, else data_dir/models)")
    ] = None,
    engine: Annotated[str, typer.Option(help="Catalog engine for the model")] = "diffusers",
    single_file_class: Annotated[
        str | None, typer.Option(help="diffusers class that reads a single file, e.g. StableDiffusionXLPipeline")
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of a single-file download")] = None,
    config: Annotated[
        str | None,
        typer.Option(help="Hub repo whose configs a single file needs offline (default: the file's own repo)"),
    ] = None,
    variant: Annotated[
        str, typer.Option(help="Weights variant to prefer where a repo has several: fp16, or none for full size")
    ] = "fp16",
    endpoint: Annotated[
        str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT, else https://huggingface.co)")
    ] = None,
    lora_for: Annotated[
        str | None, typer.Option("--lora-for", help="Pull a LoRA adapter for this catalog model instead of a model")
    ] = None,
    weight: Annotated[float | None, typer.Option(help="With --lora-for: the adapter's default weight")] = None,
    weight_name: Annotated[
        str | None, typer.Option(help="With --lora-for: the .safetensors file in a repo that holds several")
    ] = None,
    allow_http_loopback: Annotated[
        bool, typer.Option(hidden=True, help="Accept http:// for 127.0.0.1 (local mirrors, tests)")
    ] = False,
) -> None:
    """Download a model from a Hugging Face hub (or one .safetensors or .gguf URL) and add it to limner.toml."""
    from limner.engines.registry import default_factories
    from limner.pull import PullError
    from limner.pull import pull as run_pull
    from limner.pull.adapters import lora_fields, pull_lora
    from limner.pull.catalog_file import catalog_fields, upsert_lora, upsert_model
    from limner.settings import config_path, load_settings

    if engine not in default_factories():
        _fail(f"unknown engine {engine!r}: expected one of {', '.join(sorted(default_factories()))}")
    settings = load_settings()
    target = (models_dir or settings.models_dir or settings.data_dir / "models").expanduser().resolve()
    if lora_for is not None and lora_for not in {entry.id for entry in settings.models}:
        _fail(f"model '{lora_for}' is not in the catalog ({config_path()}): pull or add the base model first")
    config_file = config_path()
    try:
        if lora_for is not None:
            result = pull_lora(
                source,
                models_dir=target,
                name=name,
                weight_name=weight_name,
                revision=revision,
                sha256=sha256,
                endpoint=endpoint,
                allow_http_loopback=allow_http_loopback,
            )
            action = upsert_lora(config_file, lora_for, lora_fields(result, weight=weight))
        else:
            result = run_pull(
                source,
                models_dir=target,
                name=name,
                revision=revision,
                variant=None if variant.lower() == "none" else variant,
                sha256=sha256,
                config_repo=config,
                endpoint=endpoint,
                allow_http_loopback=allow_http_loopback,
            )
            fields = catalog_fields(result, engine=engine, single_file_class=single_file_class)
            action = upsert_model(config_file, fields)
    except (PullError, ValueError) as error:
        _fail(str(error))
    state = "pulled" if result.downloaded else "already up to date:"
    if lora_for is not None:
        typer.echo(f"{state} {result.source} -> {result.path} ({_size(result.size)})")
        typer.echo(f"{action} LoRA '{result.model_id}' of model '{lora_for}' in {config_file}")
        shown = weight if weight is not None else 1.0
        typer.echo(f'use it: "loras": [{{"name": "{result.model_id}", "weight": {shown}}}]')
        return
    where = f" @ {result.commit[:12]}" if result.commit else ""
    typer.echo(f"{state} {result.source}{where} -> {result.path} ({result.files} files, {_size(result.size)})")
    if result.config_dir is not None:
        typer.echo(f"configs: {result.config_dir}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    defaults = f"; defaults: {result.family.note}" if result.family else ""
    typer.echo(f"{action} model '{result.model_id}' in {config_file} (engine {engine}{defaults})")
    typer.echo(f'try: limner generate "a red apple" --model {result.model_id}')


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
