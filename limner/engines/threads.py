"""The CPU thread policy for local models: how many intra-op threads each model worker gets.

torch starts one intra-op thread per core it sees, in every thread that runs a model. With several
model workers, several server processes, or other work on the machine, that oversubscribes the
cores: each thread waits for the others, and a request that takes seconds with one thread per worker
takes minutes. limner therefore divides the cores it may use (its CPU affinity, capped by the tightest
cgroup CPU quota, v1 or v2, on its own cgroup or any above it) by the number of model workers that can
run at once (each local model's ``max_concurrency``, times the server processes on the machine), at
least one thread each.
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

TORCH_ENGINES = frozenset({"builtin", "diffusers", "upscaler"})
"""Catalog engines that run torch in this process (upstream providers and the test pattern do not)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where cgroups are mounted: v2's unified tree, or one directory per v1 controller (``cpu,cpuacct``)."""
SELF_CGROUP = Path("/proc/self/cgroup")


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


def cpu_max_cores(path: Path) -> int | None:
    """Whole cores allowed by a cgroup v2 ``cpu.max`` (``quota period``, or ``max period``: no limit)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _cores(quota, period)


def cfs_cores(directory: Path) -> int | None:
    """Whole cores allowed by a cgroup v1 CFS quota (``cpu.cfs_quota_us`` of -1: no limit)."""
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return None if quota.startswith("-") else _cores(quota, period)


def _cores(quota: str, period: str) -> int | None:
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def own_cgroups(self_cgroup: Path) -> list[tuple[str, str]]:
    """``(controllers, path)`` of each hierarchy this process is in (``/proc/self/cgroup``: ``id:ctrls:/path``);
    cgroup v2's unified hierarchy has no controllers listed."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return []
    return [(parts[1], parts[2]) for parts in (line.split(":", 2) for line in lines) if len(parts) == 3]


def ancestors(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each directory above it, up to ``mount`` itself."""
    here = mount
    chain = [here]
    for part in (p for p in path.split("/") if p and p not in (".", "..")):
        here = here / part
        chain.append(here)
    return chain


def cgroup_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """Whole cores allowed by the tightest CPU quota on this process's cgroups: cgroup v2's ``cpu.max`` and
    cgroup v1's CFS quota, in its own cgroup and every one above it (a parent's limit binds its children).

    In a container the path in ``/proc/self/cgroup`` may name the host's view, absent from the container's
    mount; directories that do not exist are skipped, so the mount's root (the container's cgroup) counts."""
    limits: list[int | None] = []
    for controllers, path in own_cgroups(self_cgroup):
        if not controllers:  # the unified (v2) hierarchy
            limits += [cpu_max_cores(d / "cpu.max") for d in ancestors(root, path)]
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu"):
                if mount.is_dir():
                    limits += [cfs_cores(d) for d in ancestors(mount, path)]
                    break
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def usable_cores(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The cores this process may run on: its affinity set, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(root, self_cgroup)
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
