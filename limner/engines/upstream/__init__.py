"""Upstream providers: limner as a gateway to hosted image APIs, behind the same ``Engine`` interface.

One module per provider, each only its wire format (``base.UpstreamEngine`` does the rest):

========== ===================================================================================
engine     provider
========== ===================================================================================
openai     OpenAI Images: generations (JSON), edits and variations (multipart)
gemini     Google Gemini ``models/{model}:generateContent``; text parts become ``text``
bfl        Black Forest Labs FLUX: submit, poll ``polling_url``, download ``result.sample``
aiml       AI.ML: generate, resolve ``/v1/media/images/...`` (authorized), download
milady     Milady ``/api/v1/generate-image``: ``images[].url`` or inline ``image``, ``text``
aigne      AIGNE Hub ``/api/images/generations``: OpenAI-shaped ``data[].url|b64_json``
imagineart ImagineArt 2.0: multipart in, PNG bytes out
========== ===================================================================================

A catalog entry names the provider as its ``engine`` and sets ``upstream_model``, ``provider_url``,
``api_key_env`` / ``api_key_file``, ``timeout``, ``max_retries`` and ``fallbacks``. Tuning that few
need lives in ``options``: ``backoff`` / ``max_backoff`` / ``max_retry_after`` (seconds),
``breaker_threshold`` / ``breaker_cooldown``, ``max_bytes`` / ``max_pixels`` (result image limits),
``response_format`` (``url`` or ``b64_json`` where a provider offers both; AI.ML also
``presigned_url``), ``trust_env`` (use proxy environment variables; default true), and per provider
``poll_interval`` / ``safety_tolerance`` (BFL), ``image_config`` / ``image_size`` /
``max_input_images`` (Gemini).

Every call is recorded as an ``UpstreamCall`` (provider, latency, HTTP requests, retries, images,
cost from the entry's price): ``engine.calls`` keeps the latest, ``observe_calls(engine, callback)``
hooks accounting into whatever the catalog built for a model, fallbacks included.
"""

from limner.engines.upstream.base import UpstreamEngine
from limner.engines.upstream.usage import CallObserver, UpstreamCall, observe_calls

__all__ = ["CallObserver", "UpstreamCall", "UpstreamEngine", "observe_calls"]
