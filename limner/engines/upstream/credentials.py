"""Provider credentials: from an environment variable or a secrets file, read once, never from a request.

A ``Credential`` keeps its value out of ``repr`` so it cannot reach a log line or a traceback by
accident; ``problem`` says why it is missing (naming the variable or file) for the server log only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from limner.engines.catalog import ModelEntry


@dataclass(frozen=True)
class Credential:
    value: str | None = field(default=None, repr=False)
    problem: str | None = None
    """Set when a credential was configured but could not be read: requests then fail with
    ``model_auth_error`` instead of reaching the provider unauthenticated."""


def load_credential(entry: ModelEntry) -> Credential:
    """``api_key_env`` first, then ``api_key_file``; neither configured means the provider takes none."""
    problems = []
    if entry.api_key_env:
        value = os.environ.get(entry.api_key_env, "").strip()
        if value:
            return Credential(value)
        problems.append(f"environment variable {entry.api_key_env} is not set")
    if entry.api_key_file is not None:
        try:
            value = entry.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"cannot read {entry.api_key_file} ({type(exc).__name__})")
        else:
            if value:
                return Credential(value)
            problems.append(f"{entry.api_key_file} is empty")
    return Credential(problem=" and ".join(problems) or None)
