"""ImageFetcher against a real HTTP server on 127.0.0.1; "public" hosts come from an injected resolver."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import httpx
import pytest

from limner.core.errors import InvalidImage
from limner.media.fetch import ImageFetcher, Resolver, address_problem, safe_url

from .conftest import LocalServer, image_bytes, stream_body

PNG = image_bytes("PNG")
PUBLIC_IP = "93.184.215.14"  # globally routable; never actually contacted: RoutingTransport sends it to loopback


def resolver_for(table: dict[str, Sequence[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


class RoutingTransport(httpx.AsyncBaseTransport):
    """Delivers connections meant for PUBLIC_IP to the local server, so "public" hops stay on loopback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == PUBLIC_IP, f"tried to reach {request.url.host}"
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def assert_invalid(caught: pytest.ExceptionInfo[InvalidImage], message: str, param: str | None = None) -> None:
    assert type(caught.value) is InvalidImage
    assert caught.value.code == "invalid_image"
    assert caught.value.message == message
    assert caught.value.param == param


@pytest.fixture
def local(server: LocalServer) -> ImageFetcher:
    return ImageFetcher(allow_private=True, max_bytes=1_000_000, timeout=2.0)


async def test_fetches_from_a_real_server(server: LocalServer, local: ImageFetcher) -> None:
    server.routes["/a.png"] = lambda h: server.send(h, 200, PNG, Content_Type="image/png")
    assert await local.fetch(f"{server.base}/a.png?token=x", "image 1") == PNG
    assert server.paths == ["/a.png?token=x"]


async def test_connects_to_the_vetted_address_with_the_original_host(server: LocalServer) -> None:
    server.routes["/a.png"] = lambda h: server.send(h, 200, PNG)
    fetcher = ImageFetcher(allow_private=True, resolver=resolver_for({"images.test": ["127.0.0.1"]}))
    assert await fetcher.fetch(f"http://images.test:{server.port}/a.png", "image 1") == PNG
    assert server.hosts == [f"images.test:{server.port}"]


async def test_follows_redirects_rechecking_each_hop(server: LocalServer, local: ImageFetcher) -> None:
    server.routes["/start"] = lambda h: server.send(h, 302, Location="/middle")
    server.routes["/middle"] = lambda h: server.send(h, 307, Location=f"{server.base}/a.png")
    server.routes["/a.png"] = lambda h: server.send(h, 200, PNG)
    assert await local.fetch(f"{server.base}/start", "image 1") == PNG
    assert server.paths == ["/start", "/middle", "/a.png"]


async def test_too_many_redirects(server: LocalServer) -> None:
    server.routes["/loop"] = lambda h: server.send(h, 301, Location="/loop")
    fetcher = ImageFetcher(allow_private=True, max_redirects=2)
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch(f"{server.base}/loop", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/loop: more than 2 redirects")
    assert len(server.paths) == 3


async def test_http_404(server: LocalServer, local: ImageFetcher) -> None:
    with pytest.raises(InvalidImage) as caught:
        await local.fetch(f"{server.base}/missing.png?signature=secret", "image 1", param="image_url")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/missing.png: HTTP 404", param="image_url")


async def test_declared_content_length_over_the_limit(server: LocalServer) -> None:
    server.routes["/big"] = lambda h: server.send(h, 200, b"x" * 2000)
    fetcher = ImageFetcher(allow_private=True, max_bytes=1000)
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch(f"{server.base}/big", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/big: 2000 bytes exceeds the 1000-byte limit")


async def test_streamed_body_over_the_limit_stops_early(server: LocalServer) -> None:
    server.routes["/endless"] = stream_body(50 * 2**20)
    fetcher = ImageFetcher(allow_private=True, max_bytes=256 * 1024)
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch(f"{server.base}/endless", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/endless: response exceeds the 262144-byte limit")


async def test_stalled_server_times_out(server: LocalServer) -> None:
    server.routes["/stall"] = server.stall
    fetcher = ImageFetcher(allow_private=True, timeout=0.3)
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch(f"{server.base}/stall", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/stall: timed out after 0.3s")


async def test_connection_refused(server: LocalServer) -> None:
    fetcher = ImageFetcher(allow_private=True)
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("http://127.0.0.1:1/a.png", "image 1")
    assert_invalid(caught, "image 1: could not fetch http://127.0.0.1:1/a.png: could not connect")


async def test_compressed_body_is_refused(server: LocalServer, local: ImageFetcher) -> None:
    server.routes["/gz"] = lambda h: server.send(h, 200, b"\x1f\x8b...", Content_Encoding="gzip")
    with pytest.raises(InvalidImage) as caught:
        await local.fetch(f"{server.base}/gz", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/gz: unsupported Content-Encoding 'gzip'")


@pytest.mark.parametrize(
    ("url", "shown", "address", "problem"),
    [
        ("http://127.0.0.1/x.png?k=v", "http://127.0.0.1/x.png", "127.0.0.1", "loopback"),
        ("http://10.0.0.1/x.png", "http://10.0.0.1/x.png", "10.0.0.1", "private"),
        ("http://192.168.1.20:8080/x", "http://192.168.1.20:8080/x", "192.168.1.20", "private"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "link-local",
        ),
        ("http://[::1]/x.png", "http://[::1]/x.png", "::1", "loopback"),
        ("http://0.0.0.0/x.png", "http://0.0.0.0/x.png", "0.0.0.0", "unspecified"),
        ("http://[::ffff:127.0.0.1]/x", "http://[::ffff:127.0.0.1]/x", "::ffff:7f00:1", "loopback"),
        ("http://[2002:a00:1::1]/x", "http://[2002:a00:1::1]/x", "2002:a00:1::1", "private"),
        ("https://100.64.0.1/x", "https://100.64.0.1/x", "100.64.0.1", "not globally routable"),
        ("http://224.0.0.1/x", "http://224.0.0.1/x", "224.0.0.1", "multicast"),
    ],
)
async def test_private_addresses_are_refused(url: str, shown: str, address: str, problem: str) -> None:
    fetcher = ImageFetcher(transport=httpx.MockTransport(lambda request: pytest.fail("must not connect")))
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch(url, "image 1", param="image")
    assert_invalid(caught, f"image 1: refusing to fetch {shown}: address {address} is {problem}", param="image")


async def test_localhost_is_refused_after_real_resolution() -> None:
    fetcher = ImageFetcher(transport=httpx.MockTransport(lambda request: pytest.fail("must not connect")))
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("http://localhost:8000/x.png", "image 1")
    assert caught.value.code == "invalid_image"
    assert caught.value.message in {
        "image 1: refusing to fetch http://localhost:8000/x.png: address 127.0.0.1 is loopback",
        "image 1: refusing to fetch http://localhost:8000/x.png: address ::1 is loopback",
    }


async def test_any_bad_address_refuses_the_host() -> None:
    fetcher = ImageFetcher(
        resolver=resolver_for({"mixed.test": [PUBLIC_IP, "10.1.2.3"]}),
        transport=httpx.MockTransport(lambda request: pytest.fail("must not connect")),
    )
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("http://mixed.test/x.png", "image 1")
    assert_invalid(caught, "image 1: refusing to fetch http://mixed.test/x.png: address 10.1.2.3 is private")


async def test_redirect_from_a_public_host_to_a_private_one_is_refused(server: LocalServer) -> None:
    server.routes["/to-private"] = lambda h: server.send(h, 302, Location="http://internal.test/secret?x=1")
    server.routes["/to-loopback"] = lambda h: server.send(h, 302, Location=f"{server.base}/a.png")
    server.routes["/a.png"] = lambda h: server.send(h, 200, PNG)
    transport = RoutingTransport(server.port)
    fetcher = ImageFetcher(
        transport=transport, resolver=resolver_for({"public.test": [PUBLIC_IP], "internal.test": ["10.0.0.5"]})
    )

    assert await fetcher.fetch("http://public.test/a.png", "image 1") == PNG  # the public hop itself is fine

    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("http://public.test/to-private", "image 1")
    assert_invalid(caught, "image 1: refusing to fetch http://internal.test/secret: address 10.0.0.5 is private")

    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("http://public.test/to-loopback", "image 2")
    assert_invalid(caught, f"image 2: refusing to fetch {server.base}/a.png: address 127.0.0.1 is loopback")

    assert server.paths == ["/a.png", "/to-private", "/to-loopback"]
    assert server.hosts == ["public.test"] * 3
    await transport.aclose()


async def test_https_keeps_the_host_name_for_sni_and_host_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    fetcher = ImageFetcher(transport=httpx.MockTransport(handler), resolver=resolver_for({"secure.test": [PUBLIC_IP]}))
    assert await fetcher.fetch("https://secure.test/a.png?sig=1", "image 1") == PNG
    (request,) = seen
    assert str(request.url) == f"https://{PUBLIC_IP}/a.png?sig=1"
    assert request.headers["host"] == "secure.test"
    assert request.extensions["sni_hostname"] == "secure.test"
    assert request.headers["accept-encoding"] == "identity"


async def test_unresolvable_host() -> None:
    fetcher = ImageFetcher(resolver=resolver_for({}))
    with pytest.raises(InvalidImage) as caught:
        await fetcher.fetch("https://nowhere.test/a.png", "image 1")
    assert_invalid(caught, "image 1: could not fetch https://nowhere.test/a.png: could not resolve host nowhere.test")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "image 1: unsupported URL scheme 'ftp'; use http or https"),
        ("file:///etc/passwd", "image 1: unsupported URL scheme 'file'; use http or https"),
        ("http:///a.png", "image 1: not a valid URL (no host)"),
        ("http://[not-an-ip]/", "image 1: not a valid URL"),
    ],
)
async def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        await ImageFetcher().fetch(url, "image 1")
    assert_invalid(caught, message)


async def test_redirect_to_another_scheme_is_refused(server: LocalServer, local: ImageFetcher) -> None:
    server.routes["/file"] = lambda h: server.send(h, 302, Location="file:///etc/passwd")
    with pytest.raises(InvalidImage) as caught:
        await local.fetch(f"{server.base}/file", "image 1")
    assert_invalid(caught, f"image 1: could not fetch {server.base}/file: redirected to unsupported scheme 'file'")


async def test_query_strings_never_reach_logs(
    server: LocalServer, local: ImageFetcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="limner")
    server.routes["/a.png"] = lambda h: server.send(h, 200, PNG)
    await local.fetch(f"{server.base}/a.png?token=hunter2", "image 1")
    with pytest.raises(InvalidImage):
        await ImageFetcher().fetch("http://127.0.0.1/x?token=hunter2", "image 1")
    assert "/a.png" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("172.16.0.1", "private"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", "reserved"),  # no business in DNS answers, whatever it embeds
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo hiding 10.0.0.1
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "private"),
    ],
)
def test_address_problem(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


def test_safe_url_drops_credentials_query_and_fragment() -> None:
    assert safe_url("https://user:pw@example.com:8443/a/b.png?sig=1#frag") == "https://example.com:8443/a/b.png"
    assert safe_url("/media/abc.png?signature=x") == "/media/abc.png"
