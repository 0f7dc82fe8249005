"""limner's one error tree. Every error has a stable ``code``; each dialect maps codes to its own envelope.

    LimnerError                     internal_error        500
    ├── InvalidRequest              invalid_request       400
    │   ├── InvalidImage            invalid_image         400
    │   ├── UnsupportedOperation    unsupported           400
    │   └── PayloadTooLarge         payload_too_large     413
    ├── ModelNotFound               model_not_found       404
    ├── NotFound                    unknown_request       404
    ├── AuthError                                         401
    │   ├── MissingBearerToken      missing_bearer_token  401
    │   └── InvalidToken            invalid_token         401
    ├── Forbidden                   forbidden             403
    ├── IdempotencyKeyReused        idempotency_key_reused 422
    ├── IdempotencyKeyInUse         idempotency_key_in_use 409
    ├── InsufficientCredits         insufficient_credits  402
    ├── RateLimited                 rate_limited          429
    │   └── QueueFull               queue_full            429
    ├── ModelError                  model_error           502
    │   ├── ModelNotAvailable       model_not_available   502
    │   └── ModelAuthError          model_auth_error      502
    ├── NoTokensConfigured          no_tokens_configured  503
    ├── ServiceUnavailable          unavailable           503
    └── Timeout                     timeout               504

Foreign errors (torch, Pillow, httpx, provider errors) are translated where they enter limner,
with ``raise ... from exc``, never inside dialects.
"""

from __future__ import annotations

from typing import Any


class LimnerError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details


class InvalidRequest(LimnerError):
    code = "invalid_request"
    status = 400


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class UnsupportedOperation(InvalidRequest):
    code = "unsupported"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    status = 413


class ModelNotFound(LimnerError):
    code = "model_not_found"
    status = 404

    def __init__(self, model: str, available: list[str], *, param: str | None = "model") -> None:
        shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
        super().__init__(f"Unknown model '{model}'. Available models: {shown or 'none'}.", param=param)
        self.model = model
        self.available = available


class NotFound(LimnerError):
    code = "unknown_request"
    status = 404


class AuthError(LimnerError):
    code = "invalid_token"
    status = 401


class MissingBearerToken(AuthError):
    code = "missing_bearer_token"


class InvalidToken(AuthError):
    code = "invalid_token"


class Forbidden(LimnerError):
    code = "forbidden"
    status = 403


class IdempotencyKeyReused(LimnerError):
    """An ``Idempotency-Key`` sent again with a different request: a new request needs a new key."""

    code = "idempotency_key_reused"
    status = 422


class IdempotencyKeyInUse(LimnerError):
    """The first request with this ``Idempotency-Key`` is still running (past how long a retry waits for it)."""

    code = "idempotency_key_in_use"
    status = 409


class InsufficientCredits(LimnerError):
    code = "insufficient_credits"
    status = 402

    def __init__(self, message: str, *, required: float, balance: float | None = None) -> None:
        super().__init__(message, required=required, balance=balance)
        self.required = required


class RateLimited(LimnerError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class QueueFull(RateLimited):
    code = "queue_full"


class ModelError(LimnerError):
    code = "model_error"
    status = 502


class ModelNotAvailable(ModelError):
    code = "model_not_available"


class ModelAuthError(ModelError):
    code = "model_auth_error"


class NoTokensConfigured(LimnerError):
    code = "no_tokens_configured"
    status = 503


class ServiceUnavailable(LimnerError):
    code = "unavailable"
    status = 503


class Timeout(LimnerError):
    code = "timeout"
    status = 504


class StartDeadlineExceeded(Timeout):
    """The request waited past its start deadline (``Limner-Start-Deadline``) without starting: each dialect
    answers it as its own timeout, and nothing is charged."""


def retry_after_seconds(error: LimnerError) -> int | None:
    """The whole seconds a client should wait, for the ``Retry-After`` header."""
    value = error.details.get("retry_after")
    if value is None:
        return None
    return max(1, int(-(-float(value) // 1)))


def _codes(root: type[LimnerError]) -> list[str]:
    return [root.code, *(code for sub in root.__subclasses__() for code in _codes(sub))]


ERROR_CODES: frozenset[str] = frozenset(_codes(LimnerError))
"""Every code the tree can raise: each dialect's error table covers all of them."""
