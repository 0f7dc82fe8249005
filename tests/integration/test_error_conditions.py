"""Error codes produced by real conditions on a live server, rendered by ImagineArt, AI.ML and Milady.

Each case builds a catalog where the dialects' default model names point at a model in that
condition: weights that are not there, an engine that fails, an upstream that refuses our key, an
engine name that does not exist (a bug: internal_error), one too slow for ``request_timeout``, one
too busy for its queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.core.errors import ModelAuthError
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.fakes import factories, raising
from tests.support.live_server import live_server

ALIASES = list(DIALECT_DEFAULT_ALIASES)
CASES: dict[str, dict[str, Any]] = {
    "model_not_available": {"engine": "diffusers", "path": "missing-weights"},
    "model_error": {"engine": "broken"},
    "model_auth_error": {"engine": "upstream-bad-key"},
    "internal_error": {"engine": "no-such-engine"},
    "timeout": {"engine": "testpattern", "options": {"delay": 2.0}},
}
# code -> (ImagineArt status, AI.ML status, Milady status)
STATUSES = {
    "model_not_available": (502, 502, 500),
    "model_error": (502, 502, 500),
    "model_auth_error": (502, 502, 500),
    "internal_error": (500, 500, 500),
    "timeout": (504, 504, 500),
}


def serve(settings: Settings, entry: ModelEntry, **overrides: Any) -> Any:
    app = create_app(
        settings.with_overrides(models=[entry], default_model=entry.id, **overrides),
        factories=factories(
            **{
                "broken": raising(RuntimeError("CUDA error: device-side assert triggered")),
                "upstream-bad-key": raising(ModelAuthError("The upstream provider rejected limner's API key.")),
            }
        ),
    )
    return live_server(app)


@pytest.fixture(params=sorted(CASES))
def condition(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    case = dict(CASES[request.param])
    if "path" in case:
        case["path"] = tmp_path / case["path"]
    entry = ModelEntry(id="troubled", aliases=ALIASES, **case)
    with serve(settings, entry, request_timeout=0.3) as url:
        yield request.param, url


def test_each_condition_in_each_envelope(condition: tuple[str, str]) -> None:
    code, url = condition
    imagine, aiml, milady = STATUSES[code]
    response = httpx.post(url + "/v1/images/generations", data={"prompt": "x", "resolution": "1K"}, timeout=60)
    assert response.status_code == imagine, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    response = httpx.post(url + "/v1/generation/images", json={"model": "image-gen.pro-1.0", "prompt": "x"}, timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (aiml, code)
    response = httpx.post(url + "/api/v1/generate-image", json={"prompt": "x"}, timeout=60)
    assert response.status_code == milady
    assert isinstance(response.json()["error"], str)


def test_model_missing_from_the_catalog(settings: Settings) -> None:
    entry = ModelEntry(id="only", engine="testpattern")
    with serve(settings, entry) as url:
        response = httpx.post(url + "/v1/images/generations", data={"prompt": "x"})
        assert (response.status_code, response.json()["error"]["code"]) == (502, "model_not_available")
        assert response.json()["error"]["message"] == "Model 'text-to-image' is not available on this server."
        listed = httpx.get(url + "/v1/models").json()["data"]
        assert [(item["id"], item["served_by"], "parameters" in item) for item in listed] == [("only", "only", True)]


def test_queue_full_is_rate_limited(settings: Settings) -> None:
    entry = ModelEntry(id="busy", engine="testpattern", aliases=ALIASES, options={"delay": 1.0}, max_queue=0)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *[
                    client.post("/v1/images/generations", data={"prompt": f"x{index}", "resolution": "1K"})
                    for index in range(2)
                ]
            )

    with serve(settings, entry) as url:
        responses = asyncio.run(burst(url))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 429]
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
