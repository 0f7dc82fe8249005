"""The dialect registry: every dialect honours the contract (``limner.http.dialect.Dialect``), and the routers
``create_app`` mounts follow ``settings.mounts``."""

from __future__ import annotations

from fastapi.routing import APIRoute

from limner.core.errors import ERROR_CODES
from limner.dialects import registry
from limner.http.dialect import Dialect, https_only
from limner.settings import DIALECTS as SETTINGS_DIALECTS

AUTH_CODES = ("missing_bearer_token", "invalid_token", "forbidden")


def paths(mounts: dict[str, str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(prefix, path, tags) of every route, in mounting order."""
    return [
        (prefix, route.path, tuple(str(tag) for tag in route.tags))
        for router, prefix in registry.routers(mounts)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]


def test_the_registry_lists_every_dialect_the_settings_can_mount() -> None:
    assert sorted(dialect.name for dialect in registry.DIALECTS) == sorted(SETTINGS_DIALECTS)


def test_every_dialect_declares_its_errors_auth_failures_and_token_policy() -> None:
    for dialect in registry.DIALECTS:
        assert isinstance(dialect.name, str)
        assert set(ERROR_CODES) <= set(dialect.errors), dialect.name
        for code in AUTH_CODES:  # auth failures come in the dialect's envelope, with a status from its table
            row = dialect.errors[code]
            assert (row if isinstance(row, int) else row[0]) in (401, 403), (dialect.name, code)
    policies = {dialect.name: dialect.tokens for dialect in registry.DIALECTS}
    assert policies == {"openai": "any", "imagineart": "https-only", "aigne": "any", "aiml": "any", "milady": "any"}
    assert [dialect.name for dialect in registry.DIALECTS if https_only(dialect)] == ["imagineart"]


def test_a_dialect_renders_its_own_errors() -> None:
    from limner.core.errors import InvalidToken

    dialect: Dialect
    for dialect in registry.DIALECTS:
        response = dialect.render_error(InvalidToken("no"), "req_1")
        assert response.status_code == 401, dialect.name


def test_shared_prefix_mounts_the_shared_router_first() -> None:
    found = paths({name: "" for name in SETTINGS_DIALECTS})
    assert found[0] == ("", "/v1/images/generations", ("OpenAI", "ImagineArt"))
    openai_paths = {path for _, path, tags in found if tags == ("OpenAI",)}
    assert openai_paths == {"/v1/images/variations", "/v1/images/upscale", "/v1/models/{model_id:path}"}
    assert not [path for _, path, tags in found if tags == ("ImagineArt",)]


def test_dialects_under_their_own_prefixes_mount_every_route_of_theirs() -> None:
    found = paths({"openai": "", "imagineart": "/ia", "milady": "/m"})
    assert ("/ia", "/health", ("ImagineArt",)) in found
    assert ("", "/v1/images/generations", ("OpenAI",)) in found
    assert ("/m", "/api/v1/generate-image", ("Milady",)) in found
    assert {tags for _, _, tags in found} == {("OpenAI",), ("ImagineArt",), ("Milady",)}


def test_a_dialect_missing_from_the_mounts_is_not_mounted() -> None:
    assert paths({}) == []
    found = paths({"imagineart": ""})
    assert ("", "/v1/models", ("ImagineArt",)) in found
    assert not [path for _, path, _ in found if path == "/health"]  # the app answers it at the root
