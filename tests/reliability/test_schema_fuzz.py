"""Schemathesis over limner's own OpenAPI document: every route, a fixed budget and seed, against a live
server (test-pattern models, open loopback mode, the admin API on): no server error, and every response
matches the schema documented for its status.

Budget: ``EXAMPLES`` per operation (about 30 operations), seeded, no example database, so a run is
the same every time and takes seconds. Rerun with a bigger budget by setting ``LIMNER_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from limner.app import create_app
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.live_server import live_server

ADMIN = "admin-" + "f" * 32
EXAMPLES = int(os.environ.get("LIMNER_FUZZ_EXAMPLES", "10"))
SEED = 20261207
# Constants mined from limner's source would tie the inputs to the code's literals: off, for a stable run.
CONFIG = schemathesis.Config.from_dict({"analysis": {"constants": {"enabled": False}}})


def openapi_document() -> dict[str, Any]:
    """The document a server with these settings publishes (built once, at collection), unchanged: its
    alternatives of file parts are ``anyOf``, which schemathesis generates and checks."""
    with tempfile.TemporaryDirectory() as data:
        app = create_app(fuzz_settings(Path(data)))
        try:
            return app.openapi()
        finally:
            app.state.limner.accounts.db.dispose()


def fuzz_settings(data: Path) -> Settings:
    return Settings(data_dir=data, models=pattern_models(), default_model="pattern", admin_token=ADMIN)


DOCUMENT = openapi_document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
OPERATIONS = [(path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(create_app(fuzz_settings(tmp_path_factory.mktemp("fuzz")))) as url:
        yield url


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_every_route_answers_within_its_schema(server: str, path: str, method: str) -> None:
    operation = SCHEMA[path][method]
    headers = {"Authorization": f"Bearer {ADMIN}"} if path.startswith("/admin") else None

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=server, headers=headers, checks=[not_a_server_error, response_schema_conformance]
        )

    check()
