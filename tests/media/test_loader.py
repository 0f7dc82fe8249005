"""ImageLoader: every way a client can hand over an image, and the local-media short-circuit."""

from __future__ import annotations

import base64

import httpx
import pytest

from limner.core.errors import InvalidImage
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader

from .conftest import LocalServer, image_bytes

PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG")
OWN_KEY = f"{'ab' * 32}.png"


class RecordingFetcher(ImageFetcher):
    """Fails the test if anything is fetched, unless told what to answer."""

    def __init__(self, answer: bytes | None = None) -> None:
        super().__init__()
        self.answer = answer
        self.calls: list[str] = []

    async def fetch(self, url: str, label: str, *, param: str | None = None) -> bytes:
        self.calls.append(url)
        if self.answer is None:
            pytest.fail(f"fetched {url}")
        return self.answer


async def own_media(url: str) -> bytes | None:
    """Stands in for the app: knows its own /media/ URLs, relative or absolute."""
    path = url.split("://", 1)[-1]
    path = path[path.index("/") :] if "://" in url else path
    return PNG if path.startswith(f"/media/{OWN_KEY}") else None


@pytest.fixture
def loader() -> ImageLoader:
    return ImageLoader(ImageDecoder(), RecordingFetcher(), local_media=own_media)


async def test_raw_bytes(loader: ImageLoader) -> None:
    source = await loader.load(JPEG, "image 1")
    assert (source.label, source.mime_type, source.image.size) == ("image 1", "image/jpeg", (32, 24))
    assert (await loader.load(bytearray(PNG), "image 2")).mime_type == "image/png"


async def test_data_url(loader: ImageLoader) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    source = await loader.load(url, "mask")
    assert (source.label, source.mime_type) == ("mask", "image/png")


async def test_plain_base64_including_a_jpeg_that_starts_with_a_slash(loader: ImageLoader) -> None:
    encoded = base64.b64encode(JPEG).decode()
    assert encoded.startswith("/9j/")
    assert (await loader.load(encoded, "image 1")).mime_type == "image/jpeg"
    wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)).rstrip("=")
    assert (await loader.load(f"  {wrapped}\n", "image 1")).mime_type == "image/jpeg"


@pytest.mark.parametrize(
    "url",
    [
        f"/media/{OWN_KEY}?expires=1&signature=abc",
        f"https://limner.example.com/media/{OWN_KEY}?expires=1&signature=abc",
    ],
)
async def test_own_media_urls_are_never_fetched(url: str) -> None:
    fetcher = RecordingFetcher()
    loader = ImageLoader(ImageDecoder(), fetcher, local_media=own_media)
    source = await loader.load(url, "image 1")
    assert source.mime_type == "image/png"
    assert fetcher.calls == []


async def test_foreign_urls_are_fetched() -> None:
    fetcher = RecordingFetcher(answer=JPEG)
    loader = ImageLoader(ImageDecoder(), fetcher, local_media=own_media)
    source = await loader.load("https://images.example.com/cat.jpg", "image 1")
    assert source.mime_type == "image/jpeg"
    assert fetcher.calls == ["https://images.example.com/cat.jpg"]


async def test_fetch_through_a_real_server(server: LocalServer) -> None:
    server.routes["/cat.png"] = lambda h: server.send(h, 200, PNG)
    loader = ImageLoader(ImageDecoder(), ImageFetcher(allow_private=True))
    source = await loader.load(f"{server.base}/cat.png", "image 1")
    assert source.image.size == (32, 24)


async def test_fetch_errors_carry_the_param(server: LocalServer) -> None:
    loader = ImageLoader(ImageDecoder(), ImageFetcher(allow_private=True))
    with pytest.raises(InvalidImage) as caught:
        await loader.load(f"{server.base}/gone.png", "image 2", param="image_urls")
    assert type(caught.value) is InvalidImage
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "image_urls"
    assert caught.value.message == f"image 2: could not fetch {server.base}/gone.png: HTTP 404"


async def test_fetched_bytes_are_decoded_with_the_label() -> None:
    loader = ImageLoader(ImageDecoder(), RecordingFetcher(answer=b"<html>nope</html>"))
    with pytest.raises(InvalidImage) as caught:
        await loader.load("https://images.example.com/cat.jpg", "image 3", param="image")
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "image"
    assert caught.value.message == "image 3: not a valid image file (could not decode)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/media/unknown.png?signature=secret", "image 1: /media/unknown.png is not a media URL of this server"),
        ("/etc/passwd", "image 1: /etc/passwd is not a media URL of this server"),
        ("ftp://example.com/a.png", "image 1: unsupported URL scheme 'ftp'; use http or https"),
        ("file:///etc/passwd", "image 1: unsupported URL scheme 'file'; use http or https"),
        ("not base64 at all!", "image 1: not valid base64 data"),
        ("   ", "image 1: empty file"),
        ("data:image/png;base64,@@@", "image 1: not valid base64 data"),
    ],
)
async def test_bad_references(loader: ImageLoader, value: str, message: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        await loader.load(value, "image 1", param="image")
    assert type(caught.value) is InvalidImage
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "image"
    assert caught.value.message == message


async def test_relative_paths_without_local_media_are_refused() -> None:
    loader = ImageLoader(ImageDecoder(), RecordingFetcher())
    with pytest.raises(InvalidImage) as caught:
        await loader.load(f"/media/{OWN_KEY}", "mask")
    assert caught.value.code == "invalid_image"
    assert caught.value.message == f"mask: /media/{OWN_KEY} is not a media URL of this server"


async def test_aclose_leaves_an_injected_transport_open(server: LocalServer) -> None:
    server.routes["/cat.png"] = lambda h: server.send(h, 200, PNG)
    transport = httpx.AsyncHTTPTransport()
    loader = ImageLoader(ImageDecoder(), ImageFetcher(allow_private=True, transport=transport))
    await loader.load(f"{server.base}/cat.png", "image 1")
    await loader.aclose()
    await loader.load(f"{server.base}/cat.png", "image 1")  # the transport belongs to its owner
    await transport.aclose()
