"""Server logging: httpx's own line per request is left out at INFO (limner logs each provider call itself,
with its outcome), and kept at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from limner.http.logging import configure_logging


@pytest.fixture
def restored() -> Iterator[None]:
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = root.handlers[:], root.level, httpx_logger.level
    yield
    root.handlers, root.level = handlers, level
    httpx_logger.setLevel(httpx_level)


@pytest.mark.usefixtures("restored")
def test_httpx_request_lines_only_at_debug() -> None:
    configure_logging("INFO")
    httpx_logger = logging.getLogger("httpx")
    assert not httpx_logger.isEnabledFor(logging.INFO), "a duplicate of limner's 'upstream' line"
    assert httpx_logger.isEnabledFor(logging.WARNING)
    assert logging.getLogger("limner.engines.upstream.base").isEnabledFor(logging.INFO)
    configure_logging("DEBUG")
    assert httpx_logger.isEnabledFor(logging.DEBUG)
    assert httpx_logger.isEnabledFor(logging.INFO)
