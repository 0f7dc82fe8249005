"""Fixtures the tiny-pipeline engine tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tiny_diffusers import build_tiny_sd


@pytest.fixture(scope="module")
def one_cpu_thread() -> Iterator[None]:
    """Tiny models on a busy machine: one intra-op thread is ~100x faster than contending for two
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion directory built from configs (random weights)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
