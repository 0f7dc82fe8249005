"""Absolute URLs for responses: the configured public URL, or the URL the client used to reach us."""

from __future__ import annotations

from fastapi import Request

from limner.settings import Settings


def public_base(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url
    return str(request.base_url).rstrip("/")


def absolute(request: Request, settings: Settings, path: str) -> str:
    if not path or path.startswith(("http://", "https://")):
        return path
    return public_base(request, settings) + path
