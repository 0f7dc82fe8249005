"""The CPU thread policy for local models: how many intra-op threads each model worker gets.

torch starts one intra-op thread per core it sees, in every thread that runs a model. With several
model workers, several server processes, or other work on the machine, that oversubscribes the
cores: each thread waits for the others, and a request that takes seconds with one thread per worker
takes minutes. limner therefore divides the cores it may use (its CPU affinity, capped by a cgroup
CPU quota) by the number of model workers that can run at once (each local model's
``max_concurrency``, times the server processes on the machine), at least one thread each.
``LIMNER_TORCH_THREADS`` overrides the result.

torch fixes a thread's count the first time that thread runs an operation, so the policy is applied
once, at startup, before any model worker thread exists (``apply``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from limner.engines.catalog import ModelEntry

log = logging.getLogger(__name__)

TORCH_ENGINES = frozenset({"builtin", "diffusers"})
"""Catalog engines that run torch in this process (upstream providers and the test pattern do not)."""
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class ThreadPlan:
    cores: int
    """The cores limner may use."""
    workers: int
    """Model workers that may run at once on those cores (all processes together)."""
    threads: int
    """Intra-op threads per worker."""
    overridden: bool

    def describe(self) -> str:
        source = "LIMNER_TORCH_THREADS" if self.overridden else f"{self.cores} usable cores / {self.workers} workers"
        return f"{self.threads} intra-op thread(s) per model worker ({source})"


def cgroup_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole cores allowed by a cgroup v2 CPU quota (``cpu.max``: ``quota period`` or ``max period``)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its affinity set, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def local_workers(entries: Iterable[ModelEntry]) -> int:
    """Model workers that run torch in this process and may run at once."""
    return sum(
        max(1, entry.max_concurrency)
        for entry in entries
        if entry.engine in TORCH_ENGINES and getattr(entry, "runtime", "local") == "local"
    )


def plan(entries: Iterable[ModelEntry], *, cores: int, processes: int = 1, override: int | None = None) -> ThreadPlan:
    workers = max(1, local_workers(entries)) * max(1, processes)
    if override is not None:
        return ThreadPlan(cores, workers, override, overridden=True)
    return ThreadPlan(cores, workers, max(1, cores // workers), overridden=False)


def apply(threads: int) -> bool:
    """Set torch's intra-op thread count for threads started from now on; False without torch."""
    try:
        import torch
    except ImportError:
        return False
    torch.set_num_threads(threads)
    return True


def configure(entries: list[ModelEntry], *, processes: int = 1, override: int | None = None) -> ThreadPlan | None:
    """Plan, apply and log the policy when the catalog has local torch models; None when it has none."""
    if not local_workers(entries):
        return None
    chosen = plan(entries, cores=usable_cores(), processes=processes, override=override)
    if apply(chosen.threads):
        log.info("thread policy: %s", chosen.describe())
    return chosen
