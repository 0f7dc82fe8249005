"""Denoising caches: skip work between steps whose result barely changes, through diffusers' own cache hooks.

A catalog entry names one (``cache``) and its knob; the denoiser gets it at load through ``enable_cache``, the
public entry of diffusers' ``CacheMixin``, which only some denoisers have (of limner's families, FLUX's
transformer; SD 1.x/2.x/XL UNets and SD 3's transformer have none, and asking for a cache there is a load
error that says so). What each trades:

- ``first-block``: runs the first transformer block every step and, when its output changed by less than
  ``cache_threshold`` (relative, default 0.05) since the last full step, reuses the other blocks' residual
  instead of running them. Higher thresholds skip more steps and drift further from the uncached image.
- ``taylorseer``: runs the attention layers fully every ``cache_interval`` steps (default 5) and predicts
  them in between from a Taylor expansion of their recent outputs; the first steps always run fully.

diffusers' FasterCache (experimental there, and steered by one pipeline's timestep, which derived image-to-image
pipelines do not update) and MagCache (calibrated per model) are left out.

Caches change pixels. A request that wants the model's exact images asks for ``exact`` (each dialect's
fenced extension), and the call runs with the cache taken off and put back afterwards (``Cache.off``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from limner.core.errors import ModelNotAvailable

DenoiseCache = Literal["none", "first-block", "taylorseer"]
DEFAULT_THRESHOLD = 0.05
DEFAULT_INTERVAL = 5


class Cache:
    """One loaded model's denoising cache: built once at load, taken off for exact calls."""

    def __init__(self, kind: str, threshold: float | None, interval: int | None) -> None:
        self.kind, self.threshold, self.interval = kind, threshold, interval
        self._denoiser: Any = None

    @property
    def enabled(self) -> bool:
        return self._denoiser is not None

    def attach(self, pipe: Any) -> None:
        """Put the cache on ``pipe``'s denoiser, or refuse a denoiser that has no cache hooks."""
        if self.kind == "none":
            return
        denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
        if denoiser is None or not callable(getattr(denoiser, "enable_cache", None)):
            name = type(denoiser).__name__ if denoiser is not None else type(pipe).__name__
            raise ModelNotAvailable(
                f"cache = {self.kind!r} needs a denoiser with diffusers' cache hooks (FLUX's transformer among "
                f"limner's families), and this model's {name} has none: set cache = 'none'."
            )
        denoiser.enable_cache(self._config())
        self._denoiser = denoiser

    def detach(self) -> None:
        self._denoiser = None

    @contextmanager
    def off(self, exact: bool) -> Iterator[None]:
        """The cache taken off for one call when ``exact`` (the pipeline's own pixels), and put back after."""
        denoiser = self._denoiser
        if not exact or denoiser is None:
            yield
            return
        denoiser.disable_cache()
        try:
            yield
        finally:
            denoiser.enable_cache(self._config())

    def _config(self) -> Any:
        import diffusers

        if self.kind == "first-block":
            return diffusers.FirstBlockCacheConfig(threshold=self.threshold or DEFAULT_THRESHOLD)
        return diffusers.TaylorSeerCacheConfig(cache_interval=self.interval or DEFAULT_INTERVAL)
