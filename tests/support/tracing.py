"""Spans recorded in memory by the OpenTelemetry SDK, with the process's tracer provider put back afterwards."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from limner.core.tracing import configure_tracing


def reset_tracer_provider() -> None:
    """Forget the installed tracer provider (OpenTelemetry allows one per process; its own tests reset it so)."""
    setattr(trace, "_TRACER_PROVIDER", None)  # noqa: B010
    setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())  # noqa: B010


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended in the block, in the exporter; tracing off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reset_tracer_provider()
    trace.set_tracer_provider(provider)
    assert configure_tracing({})
    try:
        yield exporter
    finally:
        provider.shutdown()
        reset_tracer_provider()
        configure_tracing({})


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [found] = [span for span in spans if span.name == name]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that keeps the body of every POST /v1/traces."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                bodies.append(body)
                self.send_response(200)
            else:
                self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Exported:
    """A span as another process exported it over OTLP (ids as integers, like the SDK's)."""

    service: str
    name: str
    trace_id: int
    span_id: int
    parent_span_id: int
    attributes: dict[str, Any]


def exported(bodies: Sequence[bytes]) -> list[Exported]:
    """Every span in the OTLP/HTTP request bodies an ``otlp_receiver`` kept."""
    found: list[Exported] = []
    for body in bodies:
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            resource = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for one in scope.spans:
                    attributes = {item.key: _value(item.value) for item in one.attributes}
                    found.append(
                        Exported(
                            service=resource.get("service.name", ""),
                            name=one.name,
                            trace_id=int.from_bytes(one.trace_id, "big"),
                            span_id=int.from_bytes(one.span_id, "big"),
                            parent_span_id=int.from_bytes(one.parent_span_id, "big") if one.parent_span_id else 0,
                            attributes=attributes,
                        )
                    )
    return found


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
