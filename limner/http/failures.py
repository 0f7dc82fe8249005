"""The errors a request's dialect rendered, for whoever listens: the job runner and ``durable`` keep the
last one as a failed job's code, while ``limner.http.routing.rendered`` notes each error it renders."""

from __future__ import annotations

from contextvars import ContextVar

from limner.core.errors import LimnerError

failures_var: ContextVar[list[LimnerError] | None] = ContextVar("limner_failures", default=None)
"""Where ``rendered`` notes each error it renders, when someone listens (the job runner: a failed job's code)."""
