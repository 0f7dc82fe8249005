"""OpenTelemetry traces: one per request, a span per service stage, provider call, webhook try, database
statement, Redis command and Ray Serve hop (``carrier`` on the API side, ``continued`` in the replica).

Off unless the standard variables ask for an exporter: ``OTEL_TRACES_EXPORTER=otlp`` (or ``console``), or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` with ``OTEL_TRACES_EXPORTER`` unset.
``configure_tracing`` then installs the SDK once per process, with a batching exporter over OTLP/HTTP
(protobuf) that reads the rest of its configuration (headers, timeout, sampler, ``OTEL_SERVICE_NAME``) from
the same standard variables. A tracer provider someone else installed (``opentelemetry-instrument``, a test)
is used as it is. While tracing is off, ``span`` returns a shared null context: no OpenTelemetry call at all.

Spans carry no secret: methods, route paths (never a query string, which may hold a media signature),
statuses, model ids, provider names and the host a call went to; never a header, prompt or token.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

TRACER = "limner"
_NULL: AbstractContextManager[None] = contextlib.nullcontext()
_state = {"enabled": False}
"""Whether spans are recorded in this process (a tracer provider is installed): set by ``configure_tracing``."""


def exporters(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the standard variables ask for: ``[]`` (tracing off), ``["otlp"]``, ``["console"]``..."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER")
    if named is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    chosen = [name.strip().lower() for name in named.split(",") if name.strip()]
    return [] if "none" in chosen else chosen


def configure_tracing(environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK's tracer provider if the environment asks for traces and none is installed yet;
    whether spans are recorded from now on."""
    installed = trace.get_tracer_provider()
    if not isinstance(installed, ProxyTracerProvider | NoOpTracerProvider):
        _state["enabled"] = True
        return True
    environ = os.environ if environ is None else environ
    chosen = exporters(environ)
    processors = [processor for name in chosen if (processor := _processor(name, environ)) is not None]
    if not processors:
        _state["enabled"] = False
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from limner import __version__

    attributes: dict[str, Any] = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "limner"
    provider = TracerProvider(resource=Resource.create(attributes))
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _state["enabled"] = True
    log.info("traces exported to %s", ", ".join(chosen))
    return True


def _processor(name: str, environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if name == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored (limner sends otlp or console)", name)
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol not in (None, "", "http/protobuf"):
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: limner sends traces over http/protobuf only", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())


def enabled() -> bool:
    return _state["enabled"]


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span | None]:
    """A child of the current span for the block (an exception in it is recorded and marks it failed);
    a null context while tracing is off."""
    if not _state["enabled"]:
        return _NULL
    return trace.get_tracer(TRACER).start_as_current_span(name, kind=kind, attributes=attributes)


def inner_span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[Span | None]:
    """``span`` inside a trace only: background polls (the job runner's, the webhook sender's) start none."""
    if not _state["enabled"] or not trace.get_current_span().get_span_context().is_valid:
        return _NULL
    return trace.get_tracer(TRACER).start_as_current_span(name, attributes=attributes)


def carrier() -> dict[str, str]:
    """The current span's context as W3C ``traceparent``/``tracestate`` entries, for a hop into another
    process (a Ray Serve replica); empty while tracing is off."""
    entries: dict[str, str] = {}
    if _state["enabled"]:
        propagate.inject(entries)
    return entries


def continued(
    name: str, entries: Mapping[str, str] | None, attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[Span | None]:
    """A ``SERVER`` span in another process, the child of the span whose ``carrier()`` the caller handed over
    (a new trace without one); a null context while tracing is off in this process."""
    if not _state["enabled"]:
        return _NULL
    parent = propagate.extract(dict(entries or {}))
    tracer = trace.get_tracer(TRACER)
    return tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)


def annotate(current: Span | None, attributes: Mapping[str, AttributeValue]) -> None:
    """Attributes known only once a span's work is done (``current`` is None while tracing is off)."""
    if current is not None:
        current.set_attributes(attributes)


def fail(current: Span | None, description: str) -> None:
    """Mark a span failed without an exception (a webhook receiver's 500)."""
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description))


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits; None outside a span or while tracing is off."""
    if not _state["enabled"]:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
