"""Structured logs: key=value text or JSON lines, each with the request id.

Every field a log line carries may come from a client (a path, a header, a model name inside an error
message), so the text format escapes control characters (CR, LF, tabs, the other C0 and C1 controls,
Unicode line and paragraph separators) in the whole formatted line: a ``%0A`` in a URL cannot end a line
early and write a forged one after it. A traceback keeps its line breaks, but each of its lines is
indented, so none can pass for a record of its own. The JSON format escapes them already (``json.dumps``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from types import TracebackType

from limner.core.tracing import current_trace_id
from limner.http.context import RequestIdFilter

CONTROLS = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]},
    **{ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"},
}
"""What each control character is written as: visible, and never a line break."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"
TRACE_INDENT = "    "
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def escape_controls(text: str) -> str:
    """``text`` on one line, its control characters as escapes (``'a\\nb'`` -> ``'a\\\\nb'``)."""
    return text if text.isprintable() else text.translate(CONTROLS)


class TextFormatter(logging.Formatter):
    """One record, one line: every field escaped; a traceback's lines indented under it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        return indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return indented(super().formatStack(stack_info))


def indented(text: str) -> str:
    """A multi-line block (a traceback) with each line escaped and indented: no line starts a record."""
    return "\n".join(TRACE_INDENT + escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id``
    and ``trace_id`` (the current span's, null while tracing is off), and ``exc`` for a traceback.

    Only those fields: never a record's other attributes, so nothing a caller passed along (a header, a
    token) reaches the line unless the message itself names it, and no message of limner's does."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "-")
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id == "-" else request_id,
            "trace_id": current_trace_id(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration plugin otherwise
    # httpx logs every request it sends at INFO; each provider call already has limner's own "upstream" line
    # (outcome, latency, retries), and a second line per request costs a gateway a few percent of its CPU.
    # At DEBUG, httpx's lines are kept.
    logging.getLogger("httpx").setLevel(logging.WARNING if root.level > logging.DEBUG else logging.NOTSET)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
