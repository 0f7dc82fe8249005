"""Webhook deliveries in traces: one client span per try, with the receiver's status; a failed try is marked
failed, with why (a status, or the reason there was none)."""

from __future__ import annotations

import base64

from opentelemetry.trace import SpanKind, StatusCode

from limner.service.webhook_post import WebhookPoster
from tests.support.tracing import recorded_spans
from tests.support.webhook_receiver import webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


async def test_each_delivery_try_is_a_client_span() -> None:
    poster = WebhookPoster(timeout=5, allow_private=True)
    with recorded_spans() as exporter, webhook_receiver() as receiver:
        await poster.post(receiver.url + "/ok", "evt_1", b"{}", [SECRET])
        await poster.post(receiver.url + "/fail", "evt_2", b"{}", [SECRET])
        await poster.post("http://127.0.0.1:9/closed", "evt_3", b"{}", [SECRET])
        spans = exporter.get_finished_spans()
    assert [one.name for one in spans] == ["webhook POST"] * 3
    assert all(one.kind is SpanKind.CLIENT and one.parent is None for one in spans)
    ok, failed, unreachable = spans
    assert ok.attributes is not None and ok.attributes["http.response.status_code"] == 204
    assert ok.attributes["limner.webhook_id"] == "evt_1" and ok.attributes["server.address"] == "127.0.0.1"
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.attributes is not None and failed.attributes["http.response.status_code"] == 500
    assert (failed.status.status_code, failed.status.description) == (StatusCode.ERROR, "HTTP 500")
    assert unreachable.attributes is not None and "http.response.status_code" not in unreachable.attributes
    assert (unreachable.status.status_code, unreachable.status.description) == (StatusCode.ERROR, "could not connect")
    assert SECRET.removeprefix("whsec_") not in repr([one.attributes for one in spans])
