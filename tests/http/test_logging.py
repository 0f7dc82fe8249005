"""Server logging: httpx's own line per request is left out at INFO (limner logs each provider call itself,
with its outcome), and kept at DEBUG; a client cannot write a line of its own into the text log."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest

from limner.app import create_app
from limner.http.logging import TextFormatter, configure_logging
from limner.settings import Settings
from tests.support.live_server import live_server


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


FORGED = "2025-01-01 00:00:00,000 INFO limner.access request_id=req_forged POST /admin/credits 200 1.0ms"


@pytest.mark.usefixtures("restored")
def test_a_line_break_in_the_path_cannot_forge_a_log_line(settings: Settings) -> None:
    configure_logging("INFO", "text")
    written = io.StringIO()
    cast(logging.StreamHandler[Any], logging.getLogger().handlers[0]).setStream(written)
    with live_server(create_app(settings)) as url:
        response = httpx.get(url + "/v1/models%0D%0A" + FORGED.replace(" ", "%20"))
    assert response.status_code == 404
    lines = written.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("2025-01-01")], "a record of the client's making"
    [access] = [line for line in lines if " limner.access " in line]
    assert access.endswith(f"GET /v1/models\\r\\n{FORGED} 404 " + access.rsplit(" ", 1)[-1])


def test_every_control_character_is_escaped_and_a_traceback_stays_under_its_record() -> None:
    formatter = TextFormatter()
    try:
        raise ValueError("bad model\n2025-01-01 00:00:00,000 INFO forged")
    except ValueError:
        record = logging.LogRecord("limner.x", logging.ERROR, __file__, 1, "%s", ("a\tb\x1b[2J\x85c\u2028d\x7f",), None)
        record.exc_info = sys.exc_info()
    record.request_id = "req_1\r"
    first, *trace = formatter.format(record).split("\n")
    assert first.endswith(" ERROR limner.x request_id=req_1\\r a\\tb\\x1b[2J\\x85c\\u2028d\\x7f")
    assert trace and all(line.startswith("    ") for line in trace)
    assert trace[-2:] == ["    ValueError: bad model", "    2025-01-01 00:00:00,000 INFO forged"]
