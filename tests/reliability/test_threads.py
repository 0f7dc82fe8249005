"""The CPU thread policy: cores limner may use, divided among the model workers that can run at once."""

from __future__ import annotations

import logging
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
    limit = tmp_path / "cpu.max"
    limit.write_text(text)
    assert threads.cgroup_quota(limit) == cores


def test_usable_cores_follow_the_affinity_mask() -> None:
    import os

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
