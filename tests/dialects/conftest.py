"""In-process apps for dialect tests: the test-pattern catalog, a recording engine, image helpers."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.fakes import RecordingEngine, consumer_from_header, factories


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    consumer_from_header(app)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def recorder() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def recording(settings: Settings, recorder: RecordingEngine) -> Iterator[TestClient]:
    """A client whose every dialect default model is ``recorder`` (default steps 10)."""
    entry = ModelEntry(id="rec", engine="recording", aliases=list(DIALECT_DEFAULT_ALIASES), default_steps=10)
    app = create_app(
        settings.with_overrides(models=[entry], default_model="rec"), factories=factories(recording=lambda e: recorder)
    )
    consumer_from_header(app)
    with TestClient(app) as test_client:
        yield test_client


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def image_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64), fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()
