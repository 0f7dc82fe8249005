"""Traces: one per request (a server span, a span per service stage under it), exported over OTLP/HTTP when
the standard variables say so, and the trace id on every JSON log line written inside it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from limner.app import create_app
from limner.core.tracing import configure_tracing, exporters, span
from limner.http.logging import configure_logging
from limner.http.tracing import TracingMiddleware
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.tracing import (
    named,
    otlp_receiver,
    parent_of,
    recorded_spans,
    reset_tracer_provider,
    span_id,
    trace_id,
)

GENERATE = {"prompt": "a lighthouse at dusk", "size": "256x256", "response_format": "b64_json"}
STAGES = ("limner.plan", "limner.inputs", "limner.generate", "limner.finish", "limner.store")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_request_is_one_trace_a_server_span_over_a_span_per_stage(settings: Settings) -> None:
    with recorded_spans() as exporter, live_server(create_app(settings)) as url:
        response = httpx.post(url + "/v1/images/generations", json=GENERATE, timeout=30)
        assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()  # the server span ends after the response: read once the server stopped
    server = named(spans, "POST /v1/images/generations")
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["limner.request_id"] == response.headers["x-request-id"]
    assert "?" not in str(server.attributes["url.path"])
    image = named(spans, "limner.image")
    assert parent_of(image) == span_id(server)
    assert image.attributes is not None and image.attributes["limner.model"] == "dall-e-2"
    for stage in STAGES:
        assert parent_of(named(spans, stage)) == span_id(image), stage
    generate = named(spans, "limner.generate")
    assert generate.attributes is not None and generate.attributes["limner.model"] == "pattern"
    assert {"limner.queue_seconds", "limner.engine_seconds"} <= set(generate.attributes)
    assert {trace_id(one) for one in spans} == {trace_id(server)}


def test_a_callers_traceparent_makes_the_request_part_of_its_trace(settings: Settings) -> None:
    traceparent = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    with recorded_spans() as exporter, live_server(create_app(settings)) as url:
        response = httpx.post(url + "/v1/images/generations", json=GENERATE, headers={"traceparent": traceparent})
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    assert {format(trace_id(one), "032x") for one in spans} == {CALLER_TRACE}
    assert parent_of(named(spans, "POST /v1/images/generations")) == 0x00F067AA0BA902B7


def test_a_failed_request_marks_its_spans_failed(settings: Settings) -> None:
    with recorded_spans() as exporter, live_server(create_app(settings)) as url:
        response = httpx.post(url + "/v1/images/generations", json={**GENERATE, "model": "no-such-model"})
        assert response.status_code in (400, 404)
    spans = exporter.get_finished_spans()
    plan = named(spans, "limner.plan")
    assert plan.status.status_code is StatusCode.ERROR
    assert [event.name for event in plan.events] == ["exception"]
    assert "limner.generate" not in {one.name for one in spans}


def test_tracing_is_off_without_the_variables(settings: Settings) -> None:
    reset_tracer_provider()
    assert not configure_tracing({})
    app = create_app(settings)
    assert TracingMiddleware not in [middleware.cls for middleware in app.user_middleware]
    with span("limner.anything") as current:
        assert current is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider), "nothing installed"


@pytest.mark.parametrize(
    ("environ", "chosen"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
    ],
)
def test_the_standard_variables_choose_the_exporters(environ: dict[str, str], chosen: list[str]) -> None:
    assert exporters(environ) == chosen


def test_spans_reach_an_otlp_endpoint_named_by_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as (endpoint, bodies):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        reset_tracer_provider()
        try:
            with live_server(create_app(settings)) as url:
                response = httpx.post(url + "/v1/images/generations", json=GENERATE, timeout=30)
                assert response.status_code == 200
            provider = trace.get_tracer_provider()
            assert isinstance(provider, TracerProvider), "create_app installed the SDK"
            assert provider.force_flush(10_000)
            provider.shutdown()
        finally:
            reset_tracer_provider()
            configure_tracing({})
    assert bodies, "nothing was exported"
    names: set[str] = set()
    services: set[str] = set()
    for body in bodies:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            attributes = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
            services.add(attributes["service.name"])
            names |= {one.name for scope in resource_spans.scope_spans for one in scope.spans}
    assert services == {"limner"}
    assert {"POST /v1/images/generations", "limner.image", *STAGES} <= names


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", "json")
    written = io.StringIO()
    cast(logging.StreamHandler[Any], root.handlers[0]).setStream(written)
    yield written
    root.handlers, root.level = handlers, level


def test_json_log_lines_carry_the_request_and_trace_ids(settings: Settings, json_log: io.StringIO) -> None:
    token = "lim_" + "s3cret" * 6
    with recorded_spans() as exporter, live_server(create_app(settings)) as url:
        response = httpx.post(
            url + "/v1/images/generations?sig=also-secret",
            json=GENERATE,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    spans = exporter.get_finished_spans()
    text = json_log.getvalue()
    assert token not in text and "s3cret" not in text and "also-secret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message", "request_id", "trace_id"} <= set(line) for line in lines)
    request_id = response.headers["x-request-id"]
    [access] = [line for line in lines if line["logger"] == "limner.access" and line["request_id"] == request_id]
    assert access["message"].startswith("POST /v1/images/generations ")
    assert access["trace_id"] == format(trace_id(named(spans, "POST /v1/images/generations")), "032x")
    assert access["time"].endswith("+00:00") and access["level"] == "info"
    startup = [line for line in lines if line["request_id"] is None]
    assert startup and all(line["trace_id"] is None for line in startup), "outside a request: no ids"


def test_json_log_lines_without_tracing_have_a_null_trace_id(settings: Settings, json_log: io.StringIO) -> None:
    reset_tracer_provider()
    configure_tracing({})
    with live_server(create_app(settings)) as url:
        response = httpx.get(url + "/health")
    [access] = [json.loads(line) for line in json_log.getvalue().splitlines() if "limner.access" in line]
    assert access["request_id"] == response.headers["x-request-id"] and access["trace_id"] is None
