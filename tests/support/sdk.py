"""Reading the ``openai`` SDK's image responses in tests."""

from __future__ import annotations

from openai.types import Image, ImagesResponse


def data_of(response: ImagesResponse) -> list[Image]:
    """The response's images: the SDK types ``data`` as optional, and limner always sends it."""
    assert response.data is not None, "an images response without data"
    return response.data
