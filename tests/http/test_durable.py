"""The parts of ``limner.http.durable`` that decide what a request asks for and when two are the same."""

from __future__ import annotations

import pytest

from limner.http.durable import fingerprint, kept, wants_async


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        ("respond-async", True),
        ("RESPOND-ASYNC", True),
        ("wait=5, respond-async", True),
        ("respond-async; foo=bar", True),
        ("handling=lenient,respond-async", True),
        ("wait=5,respond-async", True),  # two Prefer headers, joined by the server
        ("", False),
        ("wait=5", False),
        ("respond-asynchronously", False),
        ("return=respond-async", False),
    ],
)
def test_prefer_respond_async_is_read_as_rfc_7240_lists_it(prefer: str, expected: bool) -> None:
    assert wants_async(prefer) is expected


def test_the_same_json_spaced_or_ordered_otherwise_is_the_same_request() -> None:
    one = fingerprint("POST", "/v1/images/generations", "application/json", b'{"prompt": "a", "n": 1}')
    other = fingerprint("POST", "/v1/images/generations", "application/json; charset=utf-8", b'{"n":1,"prompt":"a"}')
    assert one == other
    assert one != fingerprint("POST", "/v1/images/generations", "application/json", b'{"prompt": "b", "n": 1}')
    assert one != fingerprint("POST", "/v1/images/edits", "application/json", b'{"prompt": "a", "n": 1}')


def test_a_form_with_another_boundary_is_the_same_request() -> None:
    def form(boundary: str) -> tuple[str, bytes]:
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--{boundary}--\r\n'
        return f"multipart/form-data; boundary={boundary}", body.encode()

    assert fingerprint("POST", "/p", *form("aaaa1111")) == fingerprint("POST", "/p", *form("bbbb2222"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, True),
        (400, True),
        (404, True),
        (402, False),
        (409, False),
        (429, False),
        (499, False),
        (500, False),
        (504, False),
    ],
)
def test_which_answers_are_kept_for_replays(status: int, expected: bool) -> None:
    assert kept(status) is expected


def test_the_query_string_is_part_of_the_request() -> None:
    body = b'{"prompt": "a"}'
    bare = fingerprint("POST", "/p", "application/json", body)
    assert fingerprint("POST", "/p", "application/json", body, "") == bare, "no query: the fingerprint it always had"
    one = fingerprint("POST", "/p", "application/json", body, "a=1&b=2")
    assert one != bare
    assert one != fingerprint("POST", "/p", "application/json", body, "a=1&b=3")
    assert one == fingerprint("POST", "/p", "application/json", body, "b=2&a=1"), "the same parameters, reordered"
    repeated = fingerprint("POST", "/p", "application/json", body, "a=1&a=2")
    assert repeated != fingerprint("POST", "/p", "application/json", body, "a=2&a=1"), "a repeated one keeps its order"
