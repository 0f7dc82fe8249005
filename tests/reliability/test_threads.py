"""The CPU thread policy: cores limner may use, divided among the model workers that can run at once."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from limner.engines import threads
from limner.engines.catalog import ModelEntry


def local(model_id: str, concurrency: int = 1) -> ModelEntry:
    return ModelEntry(id=model_id, engine="diffusers", path=Path("/nowhere"), max_concurrency=concurrency)


def hosted(model_id: str) -> ModelEntry:
    return ModelEntry(id=model_id, engine="testpattern")


@pytest.mark.parametrize(
    ("entries", "cores", "processes", "expected"),
    [
        ([local("a")], 16, 1, 16),
        ([local("a"), local("b")], 16, 1, 8),
        ([local("a", concurrency=2), local("b")], 16, 1, 5),
        ([local("a"), local("b")], 16, 4, 2),
        ([local("a"), local("b"), local("c")], 2, 1, 1),  # never below one thread
        ([local("a"), hosted("p")], 8, 1, 8),  # hosted models and the test pattern run no torch here
    ],
)
def test_threads_per_worker_divide_the_usable_cores(
    entries: list[ModelEntry], cores: int, processes: int, expected: int
) -> None:
    plan = threads.plan(entries, cores=cores, processes=processes)
    assert plan.threads == expected and not plan.overridden


def test_the_setting_overrides_the_policy() -> None:
    plan = threads.plan([local("a"), local("b")], cores=2, override=6)
    assert (plan.threads, plan.overridden) == (6, True)
    assert plan.describe() == "6 intra-op thread(s) per model worker (LIMNER_TORCH_THREADS)"


@pytest.mark.parametrize(
    ("text", "cores"), [("max 100000", None), ("250000 100000", 3), ("50000 100000", 1), ("", None)]
)
def test_a_cgroup_quota_caps_the_cores(tmp_path: Path, text: str, cores: int | None) -> None:
    (tmp_path / "cpu.max").write_text(text)
    (tmp_path / "self").write_text("0::/\n")
    assert threads.cgroup_quota(tmp_path, tmp_path / "self") == cores


def cgroup_tree(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/sys/fs/cgroup`` holding ``files`` and a fake ``/proc/self/cgroup`` saying ``own``."""
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "self-cgroup").write_text(own)
    return root, tmp_path / "self-cgroup"


def test_a_nested_v2_cgroup_takes_the_tightest_quota_up_to_the_root(tmp_path: Path) -> None:
    root, own = cgroup_tree(
        tmp_path,
        "0::/kubepods.slice/pod1/app\n",
        {
            "kubepods.slice/cpu.max": "800000 100000",
            "kubepods.slice/pod1/cpu.max": "200000 100000",  # the pod's limit binds the container below it
            "kubepods.slice/pod1/app/cpu.max": "max 100000",
        },
    )
    assert threads.cgroup_quota(root, own) == 2
    assert threads.usable_cores(root, own) == min(2, len(os.sched_getaffinity(0)))


def test_a_cgroup_v1_cfs_quota_caps_the_cores(tmp_path: Path) -> None:
    root, own = cgroup_tree(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "memory/docker/abc/cpu.cfs_quota_us": "50000\n",  # not the cpu controller's: ignored
        },
    )
    assert threads.cgroup_quota(root, own) == 2


def test_a_host_path_absent_in_the_container_falls_back_to_the_mounts_root(tmp_path: Path) -> None:
    """Without a cgroup namespace, /proc/self/cgroup names the host's path; the container sees its own cgroup
    at the mount's root."""
    root, own = cgroup_tree(
        tmp_path,
        "3:cpu:/docker/abc\n",
        {"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"},
    )
    assert threads.cgroup_quota(root, own) == 3


def test_no_quota_anywhere_is_no_cap(tmp_path: Path) -> None:
    root, own = cgroup_tree(tmp_path, "0::/user.slice\n", {"user.slice/cpu.max": "max 100000"})
    assert threads.cgroup_quota(root, own) is None
    assert threads.cgroup_quota(root, tmp_path / "missing") is None


def test_usable_cores_follow_the_affinity_mask() -> None:
    assert 1 <= threads.usable_cores() <= len(os.sched_getaffinity(0))


def test_no_local_model_no_policy() -> None:
    assert threads.configure([hosted("p")]) is None


def test_model_workers_started_after_startup_use_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="limner.engines.threads"):
            plan = threads.configure([local("a")], override=1)
        assert plan is not None and plan.threads == 1
        assert "thread policy: 1 intra-op thread(s) per model worker (LIMNER_TORCH_THREADS)" in caplog.text
        with ThreadPoolExecutor(1) as worker:  # a model worker thread, as DiffusersEngine starts one
            assert worker.submit(torch.get_num_threads).result() == 1
    finally:
        torch.set_num_threads(before)
