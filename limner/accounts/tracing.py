"""Database and Redis spans, from OpenTelemetry's own instrumentations, attached per engine and per client
(never by patching the libraries for the whole process), and only while tracing is on: with tracing off a
database or Redis call runs exactly as it would without OpenTelemetry installed.

They record only inside a trace (a request's, a job's, a webhook delivery's): the job runner's and the
webhook sender's polls, which query every second, would otherwise each start a trace of their own.
Statements appear with their placeholders, never their bound values, and Redis commands as ``EVALSHA ? ?``:
no prompt, token or key reaches a span."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue
from sqlalchemy import Engine

from limner.core.tracing import enabled


def trace_statements(engine: Engine) -> None:
    """A client span for each SQL statement ``engine`` runs inside a trace (the caller's, in its thread)."""
    if not enabled():
        return
    from opentelemetry.instrumentation.sqlalchemy import __version__
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    name = "opentelemetry.instrumentation.sqlalchemy"
    connections = metrics.get_meter(name, __version__).create_up_down_counter(
        "db.client.connections.usage", unit="connections"
    )
    EngineTracer(InTracesOnly().get_tracer(name, __version__), engine, connections)


def trace_commands(client: Any) -> None:
    """A client span for each command a ``redis`` (or ``redis.asyncio``) client sends inside a trace."""
    if not enabled():
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client, tracer_provider=InTracesOnly())


class InTracesOnly(TracerProvider):
    """The installed tracer provider's tracers, recording only where a span is current."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Tracer:
        installed = trace.get_tracer_provider()
        return _ChildTracer(
            installed.get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )


class _ChildTracer(Tracer):
    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return INVALID_SPAN
        return self._tracer.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    # The API's own signature returns its private context-manager type; this one is a plain contextmanager.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        if not trace.get_current_span(context).get_span_context().is_valid:
            yield INVALID_SPAN
            return
        with self._tracer.start_as_current_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception, end_on_exit
        ) as current:
            yield current
