"""What every dialect's error response shares: one table lookup with one fallback, and ``Retry-After``.

Each dialect keeps its own table (limner code -> its status and codes) because those are its wire
format; they must cover every code in ``limner.core.errors.ERROR_CODES`` (a test checks), and a code
missing anyway falls back to the table's ``internal_error`` row, never to a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi.responses import JSONResponse

from limner.core.errors import LimnerError, retry_after_seconds

Row = TypeVar("Row")


def lookup(table: Mapping[str, Row], error: LimnerError) -> Row:
    """``error``'s row in a dialect's table; its ``internal_error`` row for a code the table lacks."""
    return table.get(error.code, table["internal_error"])


def retry_after_headers(error: LimnerError) -> dict[str, str]:
    """``Retry-After`` (whole seconds) when the error says how long to wait (429s, a full queue)."""
    retry = retry_after_seconds(error)
    return {} if retry is None else {"Retry-After": str(retry)}


def error_response(body: Any, status: int, error: LimnerError) -> JSONResponse:
    """A dialect's error body as JSON, with ``Retry-After`` when the error carries one."""
    return JSONResponse(body, status_code=status, headers=retry_after_headers(error))
