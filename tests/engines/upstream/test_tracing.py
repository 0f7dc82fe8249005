"""Provider calls in traces: one client span per attempt, children of the span that made the call, each with
its status; a failed attempt marked failed; the provider's key nowhere in them."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from limner.engines.catalog import ModelEntry
from limner.engines.upstream.base import UpstreamEngine
from tests.engines.upstream.conftest import Fake, request
from tests.engines.upstream.fakes.common import KEY
from tests.support.tracing import named, parent_of, recorded_spans, span_id

MakeEngine = Callable[[ModelEntry], UpstreamEngine]


async def test_each_attempt_is_a_client_span_under_the_caller(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    fake.control.set("fail", times=1)
    engine = make_engine(fake.entry())
    with recorded_spans() as exporter:
        with trace.get_tracer("test").start_as_current_span("caller"):
            await engine.generate(request())
        spans = exporter.get_finished_spans()
    attempts = [one for one in spans if one.name == "openai POST"]
    assert len(attempts) == 2 == len(fake.control.posts())
    caller = named(spans, "caller")
    assert all(parent_of(one) == span_id(caller) and one.kind is SpanKind.CLIENT for one in attempts)
    statuses = [one.attributes["http.response.status_code"] for one in attempts if one.attributes]
    assert statuses[0] >= 500 and statuses[1] == 200  # type: ignore[operator]
    assert [one.status.status_code for one in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert attempts[1].attributes is not None and attempts[1].attributes["server.address"] == "127.0.0.1"
    recorded = repr([(one.attributes, one.events, one.status.description) for one in spans])
    assert KEY not in recorded
