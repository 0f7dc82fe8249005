"""The catalog file: a pulled model's ``[[models]]`` entry, written into ``limner.toml`` without disturbing the rest.

tomlkit edits the document in place, so the user's comments, order and formatting survive; an entry with the same
id is updated (its location; sampling defaults only where the user set none), anything else is appended. A file
with no ``[[models]]`` yet first gets the default catalog written out, because a ``[[models]]`` list replaces the
defaults: without it, pulling one model would silently remove the built-in model and its aliases.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from limner.core.files import write_atomically
from limner.engines.families import Family


@dataclass(frozen=True)
class PullResult:
    """What landed where; :func:`catalog_fields` turns it into a ``[[models]]`` entry."""

    model_id: str
    source: str
    path: Path  # the diffusers directory, or the single .safetensors file
    files: int
    size: int
    commit: str | None = None
    config_dir: Path | None = None
    sha256: str | None = None
    downloaded: bool = True  # False when the directory was already at this commit
    family: Family | None = None
    notes: list[str] = field(default_factory=list)


def catalog_fields(
    result: PullResult, *, engine: str = "diffusers", single_file_class: str | None = None
) -> dict[str, Any]:
    """The ``[[models]]`` keys for a pulled model: where it is, and the family's sampling defaults."""
    fields: dict[str, Any] = {"id": result.model_id, "engine": engine, "path": str(result.path)}
    if result.config_dir is not None:
        fields["config_dir"] = str(result.config_dir)
    if single_file_class:
        fields["single_file_class"] = single_file_class
    if result.commit is not None:  # a hub repo: its owner is who the model is "owned by" in /v1/models
        fields["owned_by"] = result.source.split("/", 1)[0]
    fields["description"] = f"pulled from {result.source}" + (f" @ {result.commit[:12]}" if result.commit else "")
    family = result.family
    if family is not None:
        fields |= {"default_steps": family.steps, "default_guidance": family.guidance}
        fields["default_strength"] = family.strength
    return fields


SOURCE_KEYS = ("engine", "path", "config_dir", "single_file_class", "description", "owned_by")
"""Keys a pull owns: replaced on every pull. Other keys (aliases, price, tuned steps) stay as the user set them."""


def upsert_model(config: Path, fields: dict[str, Any]) -> str:
    """Add or update the ``[[models]]`` entry with ``fields["id"]`` in ``config``; returns 'added' or 'updated'.

    Raises ``ValueError`` (and writes nothing) when the result would not load: an invalid entry, or a model
    name used twice.
    """
    import tomlkit
    from tomlkit.items import AoT

    document = tomlkit.parse(config.read_text() if config.exists() else "")
    models = document.get("models")
    if models is None:
        models = tomlkit.aot()
        for entry in _default_entries():
            models.append(
                _table(entry).comment("limner's default catalog: a [[models]] list replaces it, so it is kept")
            )
        document["models"] = models
    elif not isinstance(models, AoT):
        raise ValueError(f"'models' in {config} is not written as [[models]] tables; add this entry by hand")
    existing = _merge(models, "id", fields, SOURCE_KEYS)
    if existing is not None:
        for key in ("config_dir", "single_file_class"):
            if key not in fields and key in existing:
                del existing[key]  # a directory replaced a single file: these would now mislead the engine
    _save(document, config)
    return "added" if existing is None else "updated"


LORA_SOURCE_KEYS = ("path", "repo", "description", "weight")
"""Adapter keys a pull replaces (``weight`` only when given on the command line); a ``base`` the user set stays."""


def upsert_lora(config: Path, model_id: str, fields: dict[str, Any]) -> str:
    """Add or update the adapter ``fields["name"]`` in the ``loras`` of model ``model_id``; 'added' or 'updated'."""
    import tomlkit
    from tomlkit.items import AoT, Table

    document = tomlkit.parse(config.read_text() if config.exists() else "")
    models = document.get("models")
    found = [table for table in models or [] if isinstance(table, Table) and table.get("id") == model_id]
    if not found:
        raise ValueError(f"model '{model_id}' is not in {config}: pull or add the base model first")
    loras = found[0].get("loras")
    if loras is None:
        loras = found[0]["loras"] = tomlkit.aot()
    elif not isinstance(loras, AoT):
        raise ValueError(f"the loras of '{model_id}' in {config} are not [[models.loras]] tables; add this by hand")
    existing = _merge(loras, "name", fields, LORA_SOURCE_KEYS)
    _save(document, config)
    return "added" if existing is None else "updated"


def _merge(tables: Any, key: str, fields: dict[str, Any], source_keys: tuple[str, ...]) -> Any:
    """Append ``fields`` as a new table, or update the table whose ``key`` matches: the keys a pull owns
    (``source_keys``) are replaced, the others only filled in where the user set nothing. The updated
    table, or None when one was appended."""
    from tomlkit.items import Table

    existing = next((table for table in tables if isinstance(table, Table) and table.get(key) == fields[key]), None)
    if existing is None:
        tables.append(_table(fields))
        return None
    for name, value in fields.items():
        if name in source_keys or name not in existing:
            existing[name] = value
    return existing


def _save(document: Any, config: Path) -> None:
    """Check the edited catalog still loads, then replace the file at once (a running server or an editor
    never sees half of it)."""
    import tomlkit

    text = tomlkit.dumps(document)
    _check(text, config)
    write_atomically(config, text.encode(), mode=0o644)


def _default_entries() -> list[dict[str, Any]]:
    """The default catalog as tables, less what ``engine = "builtin"`` implies: the built-in model's directory
    moves with limner's installation, so it is not written down."""
    from limner.config.defaults import default_models
    from limner.engines.catalog import BUILTIN_DEFAULTS

    implied = set(BUILTIN_DEFAULTS)
    return [entry.model_dump(mode="json", exclude_defaults=True, exclude=implied) for entry in default_models()]


def _table(fields: dict[str, Any]) -> Any:
    import tomlkit

    table = tomlkit.table()
    for key, value in fields.items():
        table[key] = value
    return table


def _check(text: str, config: Path) -> None:
    """Refuse a catalog that ``limner serve`` would refuse: every entry valid, every name unique."""
    from pydantic import TypeAdapter, ValidationError

    from limner.engines.catalog import Catalog, ModelEntry

    try:
        entries = TypeAdapter(list[ModelEntry]).validate_python(tomllib.loads(text).get("models", []))
        Catalog(entries, {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{config} would not load (models.{where}: {first['msg']})") from exc
