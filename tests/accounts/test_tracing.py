"""Database and Redis spans: one request's SQL statements and rate-limit script join its trace (statements
under a span per database call, run on the accounts thread pool), none carries a token or key, and the
background polls between requests start no trace."""

from __future__ import annotations

import httpx
from opentelemetry.trace import SpanKind

from limner.settings import Settings
from tests.accounts.helpers import generate, make_app, provision
from tests.support.live_server import live_server
from tests.support.tracing import named, parent_of, recorded_spans, span_id, trace_id


def test_a_requests_database_statements_and_redis_commands_are_spans_of_its_trace(
    priced: Settings, redis_url: str
) -> None:
    settings = priced.with_overrides(redis_url=redis_url)
    token = provision(settings, "traced", 10, rpm=100)
    with recorded_spans() as exporter, live_server(make_app(settings)) as url:
        response = generate(url, token)
        assert response.status_code == 200, response.text
        untraced = httpx.get(url + "/health")  # no database call: no statement span under its server span
        assert untraced.status_code == 200
    spans = exporter.get_finished_spans()
    server = named(spans, "POST /v1/images/generations")
    ours = [one for one in spans if trace_id(one) == trace_id(server)]
    by_id = {span_id(one): one for one in ours}
    statements = [one for one in ours if (one.attributes or {}).get("db.system") == "sqlite"]
    assert statements, [one.name for one in ours]
    for statement in statements:
        parent = by_id[parent_of(statement) or 0]
        assert parent.name == "limner.db", (statement.name, parent.name)
        assert parent.attributes is not None and parent.attributes["code.function.name"]
    assert any(str((one.attributes or {}).get("db.statement", "")).startswith("UPDATE") for one in statements)
    commands = [one for one in ours if (one.attributes or {}).get("db.system") == "redis"]
    assert "EVALSHA" in {one.name for one in commands}, [one.name for one in commands]  # the rate-limit script
    for command in commands:
        sent = str((command.attributes or {})["db.statement"])
        assert sent.endswith(" ?") and "limner:" not in sent, sent  # never a bucket's key
    for one in spans:
        for value in (one.attributes or {}).values():
            assert token not in str(value) and "traced" not in str(value), (one.name, value)
    health = named(spans, "GET /health")
    assert not [one for one in spans if trace_id(one) == trace_id(health) and one is not health]
    servers = {trace_id(one) for one in spans if one.kind is SpanKind.SERVER}
    assert {trace_id(one) for one in spans} == servers, "the job runner's and webhook sender's polls start no trace"
