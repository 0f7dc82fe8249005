"""How much a block of code grew this process's resident memory at its peak (Linux ``/proc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _field(name: str) -> int:
    """A ``/proc/self/status`` figure in MiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) // 1024
    raise KeyError(name)


class PeakGrowth:
    mib: int = 0
    """The peak resident size during the block, less the resident size when it began."""


@contextmanager
def peak_growth() -> Iterator[PeakGrowth]:
    """Measures the block: the kernel's high-water mark is reset (``clear_refs`` 5) as it starts."""
    if not CLEAR_REFS.exists():
        pytest.skip("peak memory is read from /proc/self (Linux only)")
    growth = PeakGrowth()
    gc.collect()
    before = _field("VmRSS")
    CLEAR_REFS.write_text("5")
    yield growth
    growth.mib = _field("VmHWM") - before
