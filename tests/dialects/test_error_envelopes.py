"""Every limner error code, rendered by each new dialect's ``render_error``: status, code and envelope.

Auth and credit errors (401, 402, 403, 503 ``no_tokens_configured``) are produced for real by the
accounts work; until then their rendering is pinned here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import Response

from limner.core import errors
from limner.core.errors import LimnerError
from limner.dialects import aiml, imagineart, milady, openai, shared_paths


def error_classes() -> list[type[LimnerError]]:
    found: list[type[LimnerError]] = [LimnerError]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub.__module__ == errors.__name__)
    return found


def make(cls: type[LimnerError]) -> LimnerError:
    if cls is errors.ModelNotFound:
        return errors.ModelNotFound("nope", ["pattern"])
    if cls is errors.InsufficientCredits:
        return errors.InsufficientCredits("Insufficient credits for image generation", required=0.02, balance=0.0)
    if issubclass(cls, errors.RateLimited):
        return cls("Slow down.", retry_after=2.5)  # type: ignore[call-arg]
    return cls(f"{cls.__name__} happened.")


ALL_CODES = sorted({cls.code for cls in error_classes()})
ERRORS = [make(cls) for cls in error_classes()]


def body(response: Response) -> Any:
    return json.loads(bytes(response.body))


def test_the_error_tree_is_what_the_maps_cover() -> None:
    assert len(ALL_CODES) == 21
    assert sorted(errors.ERROR_CODES) == ALL_CODES
    for table in (aiml.ERROR_MAP, milady.ERROR_STATUS, imagineart.ERROR_MAP, openai.ERROR_MAP):
        assert sorted(table) == ALL_CODES, "every limner code is mapped explicitly"


@pytest.mark.parametrize("render", [openai.render_error, aiml.render_error, imagineart.render_error])
def test_a_code_outside_the_tree_falls_back_to_the_internal_error_row(render: Any) -> None:
    stray = LimnerError("odd")
    stray.code, stray.status = "stray", 418  # on the instance: no new class joins the tree for other tests
    response = render(stray, "req_1")
    assert response.status_code == 500
    assert body(response)["error"]["code"] == "internal_error"


# --- ImagineArt: exactly its table -----------------------------------------------------------------

IMAGINEART_TABLE = {
    400: {"invalid_request", "invalid_image"},
    401: {"missing_bearer_token", "invalid_token"},
    404: {"unknown_request"},
    429: {"rate_limited"},
    500: {"internal_error"},
    502: {"model_not_available", "model_error", "model_auth_error"},
    503: {"no_tokens_configured"},
    504: {"timeout"},
}
IMAGINEART_EXTRA = {413: {"invalid_request"}, 409: {"invalid_request"}, 422: {"invalid_request"}}
"""HTTP's own status for a body over the cap and for limner's Idempotency-Key errors (the reference has
none); the code is from its table."""


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.code)
def test_imagineart_envelope_uses_only_its_table(error: LimnerError) -> None:
    response = imagineart.render_error(error, "req_abc")
    payload = body(response)["error"]
    assert set(payload) == {"code", "message", "request_id"}
    assert payload["request_id"] == "req_abc"
    assert payload["code"] in {**IMAGINEART_TABLE, **IMAGINEART_EXTRA}[response.status_code]


@pytest.mark.parametrize(
    ("code", "status"), [(code, status) for status, codes in IMAGINEART_TABLE.items() for code in codes]
)
def test_imagineart_every_reference_code_renders_as_itself(code: str, status: int) -> None:
    cls = next(cls for cls in error_classes() if cls.code == code)
    response = imagineart.render_error(make(cls), "req_1")
    assert (response.status_code, body(response)["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("code", "status", "rendered"),
    [
        ("unsupported", 400, "invalid_request"),
        ("model_not_found", 502, "model_not_available"),
        ("forbidden", 401, "invalid_token"),
        ("insufficient_credits", 401, "invalid_token"),  # not 429: a client retrying a spent quota loops forever
        ("queue_full", 429, "rate_limited"),
        ("unavailable", 502, "model_not_available"),
    ],
)
def test_imagineart_maps_limner_only_codes_onto_its_table(code: str, status: int, rendered: str) -> None:
    cls = next(cls for cls in error_classes() if cls.code == code)
    response = imagineart.render_error(make(cls), "req_1")
    assert (response.status_code, body(response)["error"]["code"]) == (status, rendered)


def test_imagineart_unknown_model_names_it_without_listing_the_catalog() -> None:
    payload = body(imagineart.render_error(errors.ModelNotFound("text-to-image", ["secret-model"]), "r"))
    assert payload["error"]["message"] == "Model 'text-to-image' is not available on this server."


def test_rate_limits_carry_retry_after_in_every_dialect() -> None:
    error = errors.QueueFull("busy", retry_after=2.5)
    for render in (aiml.render_error, milady.render_error, imagineart.render_error, shared_paths.render_either):
        response = render(error, "r")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"


# --- AI.ML ---------------------------------------------------------------------------------------

AIML_STATUSES = {400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504}


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.code)
def test_aiml_envelope(error: LimnerError) -> None:
    response = aiml.render_error(error, "req_x")
    payload = body(response)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message", "request_id"}
    assert payload["error"]["message"] == error.message
    assert response.status_code in AIML_STATUSES


@pytest.mark.parametrize(
    ("code", "status", "rendered"),
    [
        ("invalid_request", 400, "invalid_request"),
        ("invalid_image", 400, "invalid_image"),
        ("model_not_found", 400, "model_not_found"),
        ("missing_bearer_token", 401, "missing_bearer_token"),
        ("invalid_token", 401, "invalid_token"),
        ("forbidden", 403, "forbidden"),
        ("insufficient_credits", 403, "insufficient_credits"),
        ("unknown_request", 404, "not_found"),
        ("rate_limited", 429, "rate_limited"),
        ("queue_full", 429, "rate_limited"),
        ("internal_error", 500, "internal_error"),
        ("model_error", 502, "model_error"),
        ("no_tokens_configured", 503, "no_tokens_configured"),
        ("timeout", 504, "timeout"),
    ],
)
def test_aiml_statuses(code: str, status: int, rendered: str) -> None:
    cls = next(cls for cls in error_classes() if cls.code == code)
    response = aiml.render_error(make(cls), "r")
    assert (response.status_code, body(response)["error"]["code"]) == (status, rendered)


# --- Milady --------------------------------------------------------------------------------------

MILADY_STATUSES = {400, 401, 402, 403, 404, 409, 413, 422, 429, 500, 503}


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.code)
def test_milady_envelope(error: LimnerError) -> None:
    response = milady.render_error(error, "r")
    payload = body(response)
    assert isinstance(payload["error"], str) and payload["error"]
    assert payload["code"] == error.code
    assert response.status_code in MILADY_STATUSES


def test_milady_insufficient_credits_is_402_with_required() -> None:
    error = errors.InsufficientCredits("Insufficient credits for image generation", required=0.02)
    response = milady.render_error(error, "r")
    assert response.status_code == 402
    assert body(response) == {
        "error": "Insufficient credits for image generation",
        "code": "insufficient_credits",
        "required": 0.02,
    }


@pytest.mark.parametrize(
    ("error", "status", "prefix"),
    [
        (errors.ModelNotFound("nope", ["pattern"]), 400, "Invalid model: Unknown model 'nope'"),
        (errors.ModelError("boom"), 500, "Generation failed: boom"),
        (errors.Timeout("slow"), 500, "Generation failed: slow"),
        (errors.LimnerError("Internal server error."), 500, "Internal server error."),
        (errors.MissingBearerToken("Missing bearer token."), 401, "Missing bearer token."),
        (errors.InvalidToken("Invalid API token."), 401, "Invalid API token."),
        (errors.Forbidden("Not yours."), 403, "Not yours."),
        (errors.NoTokensConfigured("No tokens configured."), 503, "No tokens configured."),
    ],
)
def test_milady_statuses_and_messages(error: LimnerError, status: int, prefix: str) -> None:
    response = milady.render_error(error, "r")
    assert response.status_code == status
    assert body(response)["error"].startswith(prefix)


def test_milady_rate_limit_says_when_to_retry() -> None:
    response = milady.render_error(errors.RateLimited("Rate limited", retry_after=4), "r")
    assert response.status_code == 429
    assert body(response) == {"error": "Rate limited", "code": "rate_limited", "retryAfter": 4}


# --- the shared envelope -------------------------------------------------------------------------


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.code)
def test_shared_envelope_has_both_dialects_fields(error: LimnerError) -> None:
    response = shared_paths.render_either(error, "req_s")
    payload = body(response)["error"]
    assert set(payload) == {"message", "type", "param", "code", "request_id"}
    assert payload["code"] in {**IMAGINEART_TABLE, **IMAGINEART_EXTRA}[response.status_code]
