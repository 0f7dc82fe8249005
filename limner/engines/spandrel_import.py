"""spandrel, imported where torchvision cannot be.

spandrel loads ESRGAN-, SwinIR-, HAT- and similar upscaler files and needs torchvision for two of its
architectures only (LaMa inpainting and RestoreFormer face restoration, neither an upscaler), yet imports it
for all of them when the package is imported. torch 2.13's CPU build, which limner pins, has no torchvision
that imports beside it on x86_64 (PyPI's is a CUDA build: "operator torchvision::nms does not exist").

So where torchvision does not import, spandrel is imported with a stand-in for the two functions those
architectures name, each refusing to run, and the stand-in is removed again at once: nothing else (diffusers,
transformers) ever sees it, and with a working torchvision nothing here happens. When torchvision installs
beside the pinned torch, delete this module (``tests/engines/test_spandrel_import.py`` says so)."""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()
STAND_IN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def spandrel() -> ModuleType:
    """The ``spandrel`` package; ``ImportError`` when it is not installed (``pip install 'limner[upscale]'``)."""
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if torchvision_imports():
            return importlib.import_module("spandrel")
        added = _stand_in()
        try:
            return importlib.import_module("spandrel")
        finally:
            for name in added:
                sys.modules.pop(name, None)


def torchvision_imports() -> bool:
    """Whether the real torchvision imports here (then spandrel needs no stand-in)."""
    try:
        importlib.import_module("torchvision")
    except Exception:  # missing, or a CUDA build beside CPU torch (a RuntimeError while it registers its ops)
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("This spandrel architecture needs torchvision, which is not installed beside this torch.")


def _stand_in() -> list[str]:
    """Modules standing in for torchvision's, with the names spandrel's imports read; the ones added."""
    functional = ModuleType("torchvision.transforms.functional")
    functional.rotate = _refuse  # type: ignore[attr-defined]
    functional.normalize = _refuse  # type: ignore[attr-defined]
    functional.InterpolationMode = type("InterpolationMode", (), {})  # type: ignore[attr-defined]
    transforms = ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    package = ModuleType("torchvision")
    package.transforms = transforms  # type: ignore[attr-defined]
    modules = dict(zip(STAND_IN, (package, transforms, functional), strict=True))
    added = [name for name in STAND_IN if name not in sys.modules]
    for name in added:
        sys.modules[name] = modules[name]
    return added
