"""``Answer``: how a dialect answers one image request, decided when it translates the request.

It is small, typed and serialisable: an async job stores it beside its ``ImageRequest``, and the dialect
renders the job's result from the two later exactly as it would have answered at once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Answer:
    dialect: str
    """Whose renderer answers (a dialect's name, the key it is registered under)."""
    endpoint: str
    """Which of the dialect's endpoints was called: ``generation``, ``edit``, ``variation``..."""
    stream: bool = False
    """Server-sent events instead of one body (OpenAI's and AI.ML's ``stream``)."""
    response_format: str | None = None
    model: str | None = None
    """The model as the client named it (OpenAI's answer takes its shape from that name)."""
    base_url: str = ""
    """Where absolute links in the answer start ('' where no trusted base is known: root-relative links)."""
    consumer: str = ""
    """Whose media paths the answer names (AI.ML's backend paths)."""
    safety_identifier: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Answer:
        data: dict[str, Any] = json.loads(text)
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})
