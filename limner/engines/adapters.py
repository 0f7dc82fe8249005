"""LoRA adapters: which a request may use (checked against the catalog), and keeping them loaded in a pipeline.

Requests name adapters of their own model, each with a weight (the catalog's default when left out).
``resolve_loras`` turns that into the engine's list, or a 400 that names the problem: an unknown name,
an adapter that belongs to another model, the same adapter twice, a weight out of range.

``LoraSet`` lives in the engine's worker thread: each adapter is read from disk the first time a request
uses it and stays in the pipeline (diffusers' peft integration), so switching adapters between requests
is ``set_adapters`` on the loaded model, never a reload of the base weights. Adapters whose weights do not
fit the model (trained for another base) are a 400 too, remembered so the next request fails fast.

A compiled model (``compile = true``) swaps instead: before it compiles, ``prepare_hotswap`` gives it one
adapter slot sized for the largest catalog adapter (diffusers' ``enable_lora_hotswap``), and a request's
adapter is written into that slot (``load_lora_weights(..., hotswap=True)``), so changing adapters never
recompiles the graph. It applies one adapter at a time; no adapter is the slot at weight 0.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limner.core.errors import InvalidRequest, ModelNotAvailable
from limner.core.models import LoraChoice
from limner.engines.catalog import Catalog, ModelEntry

MAX_LORAS = 8
"""Adapters one request may combine."""
WEIGHT_RANGE = (-4.0, 4.0)

Pipeline = Any  # a diffusers.DiffusionPipeline with LoRA support


@dataclass(frozen=True)
class LoraSpec:
    """One adapter as the engine loads it."""

    name: str
    path: Path
    weight_name: str | None = None
    weight: float = 1.0
    base: str | None = None


def resolve_loras(entry: ModelEntry, choices: Sequence[LoraChoice], catalog: Catalog) -> tuple[LoraChoice, ...]:
    """The adapters a request asked for, checked against its model and with every weight filled in."""
    if len(choices) > MAX_LORAS:
        raise InvalidRequest(f"At most {MAX_LORAS} LoRA adapters per request; got {len(choices)}.", param="loras")
    resolved: list[LoraChoice] = []
    for choice in choices:
        lora = entry.lora(choice.name)
        if lora is None:
            raise InvalidRequest(_unknown(entry, choice.name, catalog.lora_owners(choice.name)), param="loras")
        if any(done.name == choice.name for done in resolved):
            raise InvalidRequest(f"LoRA '{choice.name}' is listed twice.", param="loras")
        weight = lora.weight if choice.weight is None else choice.weight
        low, high = WEIGHT_RANGE
        if not low <= weight <= high:
            raise InvalidRequest(
                f"LoRA '{choice.name}' weight {weight:g} is out of range: between {low:g} and {high:g}.",
                param="loras",
            )
        resolved.append(LoraChoice(choice.name, weight))
    return tuple(resolved)


def _unknown(entry: ModelEntry, name: str, owners: list[str]) -> str:
    offered = ", ".join(lora.name for lora in entry.loras)
    offers = f"it offers: {offered}" if offered else "it offers no LoRA adapters"
    if owners:
        return f"LoRA '{name}' is for model '{owners[0]}', not '{entry.id}'; {offers}."
    return f"Unknown LoRA '{name}' for model '{entry.id}'; {offers}."


def specs_for(entry: ModelEntry) -> tuple[LoraSpec, ...]:
    return tuple(LoraSpec(lora.name, lora.path, lora.weight_name, lora.weight, lora.base) for lora in entry.loras)


class LoraSet:
    """The adapters loaded into one pipeline and the ones active now. Worker thread only, under the engine lock."""

    def __init__(self, specs: Sequence[LoraSpec], *, hotswap: bool = False) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.hotswap = hotswap
        """One adapter slot whose weights are swapped (a compiled model): see the module docstring."""
        self._slot: str | None = None
        self.loaded: dict[str, str] = {}
        """Catalog name -> the adapter's name inside the pipeline."""
        self._refused: dict[str, str] = {}
        self._active: tuple[LoraChoice, ...] | None = None
        self.loads = 0
        """Adapters read from disk so far (each at most once per load of the base model)."""

    def reset(self) -> None:
        """The pipeline went away (unloaded): everything must be loaded again with the next one."""
        self.loaded.clear()
        self._active = None
        self._slot = None

    def prepare_hotswap(self, pipe: Pipeline) -> None:
        """Before compiling: the slot, holding the first catalog adapter at weight 0 (the graph every later
        adapter and weight runs through)."""
        if not self.hotswap or not self.specs:
            return
        pipe.enable_lora_hotswap(target_rank=max(lora_rank(_weights_file(spec)) for spec in self.specs.values()))
        self._load(pipe, next(iter(self.specs.values())))
        pipe.set_adapters([HOT_SLOT], [0.0])
        self._active = ()

    def apply(self, pipe: Pipeline, choices: tuple[LoraChoice, ...]) -> None:
        """Make exactly ``choices`` active on ``pipe``, loading the adapters it has not seen yet."""
        if choices == self._active:
            return
        if self.hotswap:
            if self.specs:  # no catalog adapters: no slot was made, and no request can name one
                self._swap(pipe, choices)
            return
        for choice in choices:
            if choice.name not in self.loaded:
                self._load(pipe, self.specs[choice.name])
        if choices:
            pipe.enable_lora()
            pipe.set_adapters([self.loaded[c.name] for c in choices], [c.weight for c in choices])
        elif self.loaded:
            pipe.disable_lora()
        self._active = choices

    def _swap(self, pipe: Pipeline, choices: tuple[LoraChoice, ...]) -> None:
        if len(choices) > 1:
            raise InvalidRequest(
                "This model is compiled and applies one LoRA adapter at a time; ask for one.", param="loras"
            )
        if choices and choices[0].name != self._slot:
            self._load(pipe, self.specs[choices[0].name])
        pipe.set_adapters([HOT_SLOT], [choices[0].weight if choices else 0.0])
        self._active = choices

    def _load(self, pipe: Pipeline, spec: LoraSpec) -> None:
        self._active = None  # whatever happens next, set the adapters again
        if spec.name in self._refused:
            raise InvalidRequest(self._refused[spec.name], param="loras")
        path = spec.path.expanduser()
        if not path.exists():
            raise ModelNotAvailable(f"LoRA '{spec.name}': {path} does not exist (limner pull fetches hub adapters).")
        if not hasattr(pipe, "load_lora_weights"):
            raise InvalidRequest(
                f"This model's pipeline ({type(pipe).__name__}) takes no LoRA adapters.", param="loras"
            )
        adapter = HOT_SLOT if self.hotswap else _adapter_name(spec.name, len(self.loaded))
        kwargs: dict[str, Any] = {"weight_name": spec.weight_name} if spec.weight_name else {}
        if self.hotswap and self._slot is not None:
            kwargs["hotswap"] = True  # the slot's weights replaced in place: the compiled graph stays
        try:
            pipe.load_lora_weights(str(path), adapter_name=adapter, **kwargs)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatches, keys of another architecture
            if not self.hotswap:
                self._forget(pipe, adapter)
            self._refuse(spec, f"its weights do not fit this model ({_first_line(exc)})")
        if not any(adapter in names for names in pipe.get_list_adapters().values()):
            self._refuse(spec, "none of its weights match this model's layers")
        self.loaded[spec.name] = adapter
        self._slot = spec.name if self.hotswap else None
        self.loads += 1

    def _refuse(self, spec: LoraSpec, why: str) -> None:
        message = f"LoRA '{spec.name}' cannot be used with this model: {why}; is it for another base model?"
        self._refused[spec.name] = message
        raise InvalidRequest(message, param="loras")

    @staticmethod
    def _forget(pipe: Pipeline, adapter: str) -> None:
        """Remove what a failed load left behind, so the model runs as before."""
        with contextlib.suppress(Exception):  # diffusers usually removed it already
            pipe.delete_adapters(adapter)


HOT_SLOT = "hotswap"
"""The one adapter name a compiled model's adapters are swapped into."""
DEFAULT_FILE = "pytorch_lora_weights.safetensors"


def _weights_file(spec: LoraSpec) -> Path:
    path = spec.path.expanduser()
    return path / (spec.weight_name or DEFAULT_FILE) if path.is_dir() else path


def lora_rank(path: Path) -> int:
    """An adapter's rank, read from its safetensors header (the rows of its down projections), no weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            ranks = [
                weights.get_slice(key).get_shape()[0]
                for key in weights.keys()  # noqa: SIM118 - safe_open is not a mapping
                if "lora_A" in key or "lora_down" in key
            ]
    except OSError as exc:
        raise ModelNotAvailable(f"LoRA file {path} cannot be read: {exc}") from exc
    if not ranks:
        raise ModelNotAvailable(f"LoRA file {path} has no lora_A/lora_down weights to read its rank from.")
    return max(ranks)


def _adapter_name(name: str, index: int) -> str:
    """peft keeps adapters in module dicts, whose keys cannot contain dots."""
    return f"lora{index}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    detail = " ".join(line.strip() for line in text[:2]) if text else type(exc).__name__
    return detail[:300]
