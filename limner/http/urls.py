"""Absolute URLs for responses: from ``LIMNER_PUBLIC_URL``, or from the ``Host`` the client used when
that host is one the operator named (``LIMNER_ALLOWED_HOSTS``, or the loopback names on a loopback bind).

A ``Host`` that is only let in by the ``*`` default of a public bind is never copied into a URL: a
client could otherwise make the server hand out links to any site. Such responses carry root-relative
paths (``/media/...``) instead; set ``LIMNER_PUBLIC_URL`` to get absolute ones.
"""

from __future__ import annotations

from fastapi import Request

from limner.http.guards import host_named, split_host
from limner.settings import Settings


def public_base(request: Request, settings: Settings) -> str:
    """``https://img.example.com``, ``http://127.0.0.1:8000``, or ``''`` when no trusted base is known."""
    if settings.public_url:
        return settings.public_url
    host = split_host(request.headers.get("host", ""))
    if host is None or not host_named(host[0], settings.host_patterns):
        return ""
    return str(request.base_url).rstrip("/")


def absolute(request: Request, settings: Settings, path: str) -> str:
    return joined(public_base(request, settings), path)


def joined(base: str, path: str) -> str:
    """``path`` under ``base`` (a ``public_base``, kept in an ``Answer``); an absolute URL as it is."""
    if not path or path.startswith(("http://", "https://")):
        return path
    return base + path
