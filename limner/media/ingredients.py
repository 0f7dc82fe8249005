"""An image a result is made from, made safe to list as an ingredient of its Content Credentials.

The C2PA library copies an ingredient's own manifest store into the new manifest, whole, for every image
signed with it, and validates it each time. A hostile input could make that costly or fail it: a store of
megabytes (every result would carry it again), a chain of thousands of manifests, or a store the library
cannot parse (signing would fail). Each input is therefore looked at once per request, cheaply first:

- its store's size, from the file's chunk headers (``limner.media.manifest_store``), against
  ``MAX_STORE_BYTES``;
- then, under that size, the library's reader: a store it cannot parse, or with more than
  ``MAX_MANIFESTS`` manifests, is not kept either.

Such an input stays an ingredient (the result was made from it) but without its store, and its title says
why, so ``limner provenance check`` and any validator show what happened. A store that parses but does not
validate (a broken signature) is kept: the new manifest records its failures.
"""

from __future__ import annotations

import io
import json

import c2pa

from limner.media.manifest_store import store_size, without_store
from limner.media.provenance import Ingredient, offline_context

MAX_STORE_BYTES = 1 << 20
"""The largest manifest store an ingredient keeps (1 MiB: limner's own are about 3 KB a manifest, a
camera's or a provider's with a thumbnail tens of KB)."""
MAX_MANIFESTS = 64
"""The longest chain of manifests an ingredient keeps (each edit through limner adds one)."""


def checked_ingredient(
    data: bytes,
    mime_type: str,
    title: str,
    *,
    max_store_bytes: int = MAX_STORE_BYTES,
    max_manifests: int = MAX_MANIFESTS,
) -> Ingredient:
    """``data`` as an ingredient: with its own manifest store when that is small, sound and shallow enough,
    else without it, the title saying why."""
    size = store_size(data, mime_type)
    if size == 0:
        return Ingredient(data, mime_type, title)
    if size > max_store_bytes:
        reason = f"its Content Credentials ({size // 1024} KB) are over the {max_store_bytes // 1024} KB limit"
        return _without(data, mime_type, title, reason)
    try:
        with c2pa.Reader(mime_type, io.BytesIO(data), context=offline_context()) as reader:
            manifests = len(json.loads(reader.json()).get("manifests") or {})
    except (c2pa.C2paError, ValueError):
        return _without(data, mime_type, title, "its Content Credentials could not be read")
    if manifests > max_manifests:
        reason = f"its Content Credentials ({manifests} manifests) are over the limit of {max_manifests}"
        return _without(data, mime_type, title, reason)
    return Ingredient(data, mime_type, title)


def bare_ingredient(ingredient: Ingredient, reason: str) -> Ingredient:
    """``ingredient`` without its own manifest store, its title saying why (``reason``)."""
    return _without(ingredient.data, ingredient.mime_type, ingredient.title, reason)


def _without(data: bytes, mime_type: str, title: str, reason: str) -> Ingredient:
    return Ingredient(without_store(data, mime_type), mime_type, f"{title} ({reason} and were left out)")
