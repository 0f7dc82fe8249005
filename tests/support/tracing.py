"""Spans recorded in memory by the OpenTelemetry SDK, with the process's tracer provider put back afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
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
