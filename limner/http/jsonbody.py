"""Reading a JSON request body safely: the content type, strict UTF-8, bounded nesting, no lone surrogates.

The size is capped before this runs (``limner.http.guards.BodyLimit``). Python's ``json`` module would
otherwise accept what a web page can send cross-site without a preflight (``text/plain; charset=json``),
guess UTF-16 or UTF-32 from the bytes, recurse until ``RecursionError`` on deep nesting, parse ``NaN``
and ``Infinity`` (not JSON), read ``1e400`` as infinity, and turn ``"\\ud800"`` into a string that
cannot be written anywhere as UTF-8. Each of those is a 400 here, with a message naming the problem.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from limner.core.errors import InvalidRequest

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted; no dialect's body nests more than a few levels."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``'Application/JSON; charset="UTF-8"'`` -> ``('application/json', {'charset': 'utf-8'})``."""
    kind, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), params


def is_json(kind: str) -> bool:
    """``application/json`` or a structured ``application/<something>+json`` type."""
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def check_content_type(content_type: str) -> None:
    """Refuse anything but JSON in UTF-8: a browser sends no other type cross-site without asking first."""
    kind, params = media_type(content_type)
    if not is_json(kind):
        raise InvalidRequest(f"Unsupported content type '{kind or 'none'}': send application/json.")
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise InvalidRequest(f"Unsupported charset '{charset}': send the JSON body as UTF-8.")


def _constant(name: str) -> Any:
    raise InvalidRequest(f"Request body is not valid JSON: '{name}' is not a JSON number.")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidRequest(f"Request body has a number out of range: {text[:40]}.")
    return value


def parse(raw: bytes) -> Any:
    """The JSON value in ``raw``, or an ``InvalidRequest`` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid UTF-8 (byte {exc.start}).") from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise InvalidRequest(f"Request body nests JSON deeper than {MAX_DEPTH} levels.") from None
    except json.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None
    except ValueError:  # an integer past Python's limit of 4300 digits
        raise InvalidRequest("Request body is not valid JSON: a number has too many digits.") from None
    check(value, surrogates=_SURROGATE_ESCAPE.search(text) is not None)
    return value


def check(value: Any, *, surrogates: bool = True) -> None:
    """Walk ``value`` without recursion: at most ``MAX_DEPTH`` levels, and (when asked) every string UTF-8."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(f"Request body nests JSON deeper than {MAX_DEPTH} levels.")
            if isinstance(item, dict):
                if surrogates:
                    for key in item:
                        _utf8(key)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif surrogates and isinstance(item, str):
            _utf8(item)


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"Request body has a string that is not valid UTF-8: a lone surrogate escape "
            f"(\\u{ord(text[exc.start]):04x})."
        ) from None
