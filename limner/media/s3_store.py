"""Media on an S3-compatible object store (AWS S3, MinIO, Ceph, Cloudflare R2, Garage, ...), so that any
API replica can read what another one stored.

Layout under ``prefix`` in one bucket:

    <prefix>media/<3f>/<key>                 the image (Content-Type set), written once per content address
    <prefix>owners/<key>/<quoted consumer>   an empty marker per owner

Owners are separate objects, not metadata on the image, because S3 metadata cannot change in place:
adding an owner would mean rewriting the object, and two replicas doing that at once could lose one.
A marker is written only after its image exists, so an owner never points at nothing; a delete removes
the image before its last marker, so a crash in between leaves an orphan marker, never unowned media.

boto3 is synchronous; every call runs in a worker thread. Errors name neither the bucket nor the
endpoint: clients see ``NotFound`` or a generic store failure, operators see the details in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import boto3
import botocore.config
import botocore.exceptions

from limner.core.errors import LimnerError
from limner.media.store import MediaStore, content_key, is_valid_key, mime_type_for, not_found

logger = logging.getLogger(__name__)

T = TypeVar("T")
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
REFUSED = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "403"})


@dataclass(frozen=True)
class S3Location:
    """Where the media lives and how to reach it; credentials unset fall back to boto3's usual chain."""

    bucket: str
    endpoint_url: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = False
    """Address the bucket in the path (``endpoint/bucket/key``), as MinIO, Ceph and Garage usually want."""

    def client(self) -> Any:
        config = botocore.config.Config(
            signature_version="s3v4",  # presigned links too: MinIO, R2 and current AWS regions want SigV4
            s3={"addressing_style": "path" if self.path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=config,
        )


class S3MediaStore(MediaStore):
    def __init__(self, location: S3Location, *, presign_ttl: int = 3600) -> None:
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.presign_ttl = presign_ttl
        self._client = location.client()

    # -- object names ----------------------------------------------------------------------------

    def _object(self, key: str) -> str:
        if not is_valid_key(key):
            raise not_found(key)
        return f"{self.prefix}media/{key[:2]}/{key}"

    def _owners_prefix(self, key: str) -> str:
        return f"{self.prefix}owners/{key}/"

    def _marker(self, key: str, owner: str) -> str:
        return self._owners_prefix(key) + quote(owner, safe="")

    # -- the store interface ---------------------------------------------------------------------

    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        key = content_key(data, mime_type)
        name = self._object(key)
        if not await self._call("write", self._exists_sync, name):
            await self._call(
                "write", self._client.put_object, Bucket=self.bucket, Key=name, Body=data, ContentType=mime_type
            )
        await self._call("write", self._client.put_object, Bucket=self.bucket, Key=self._marker(key, owner), Body=b"")
        return key

    async def get(self, key: str) -> bytes:
        name = self._object(key)
        try:
            answer = await self._call("read", self._client.get_object, Bucket=self.bucket, Key=name)
            body: bytes = await asyncio.to_thread(answer["Body"].read)
        except _Missing:
            raise not_found(key) from None
        return body

    async def owners(self, key: str) -> set[str]:
        if not await self.exists(key):
            raise not_found(key)
        return await self._call("read", self._owners_sync, key)

    async def exists(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        exists: bool = await self._call("read", self._exists_sync, self._object(key))
        return exists

    async def delete(self, key: str, *, owner: str | None = None) -> None:
        name = self._object(key)
        owners = await self.owners(key)  # NotFound when absent
        if owner is not None and owner not in owners:
            raise not_found(key)
        leaving = {owner} if owner is not None else owners
        if not owners - leaving:  # the last owner: the image goes first, then its markers
            await self._call("write", self._client.delete_object, Bucket=self.bucket, Key=name)
        for gone in leaving:
            await self._call("write", self._client.delete_object, Bucket=self.bucket, Key=self._marker(key, gone))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)

    # -- links -------------------------------------------------------------------------------------

    def presigned_url(self, key: str) -> str | None:
        """An S3 presigned GET for ``key``, valid ``presign_ttl`` seconds (computed locally, no request)."""
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._object(key), "ResponseContentType": mime_type_for(key)},
            ExpiresIn=self.presign_ttl,
        )
        return url

    def key_in_url(self, url: str) -> str | None:
        """The media key behind one of this store's own presigned URLs (so it is read, never fetched)."""
        parts = urlsplit(url)
        mine = urlsplit(self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": "x"}))
        if (parts.scheme, parts.netloc) != (mine.scheme, mine.netloc):
            return None
        path = unquote(parts.path)
        marker = f"{self.prefix}media/"
        if marker not in path:
            return None
        key = path.rsplit("/", 1)[-1]
        return key if is_valid_key(key) and path.endswith(f"{marker}{key[:2]}/{key}") else None

    # -- blocking helpers --------------------------------------------------------------------------

    def _exists_sync(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in MISSING:
                return False
            raise
        return True

    def _owners_sync(self, key: str) -> set[str]:
        prefix = self._owners_prefix(key)
        owners: set[str] = set()
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            owners.update(unquote(item["Key"][len(prefix) :]) for item in page.get("Contents", []))
        return owners

    async def _call(self, action: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one boto3 call in a thread; S3's failures become limner's, without bucket or endpoint names."""
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in MISSING:
                raise _Missing from exc
            if code in REFUSED:
                logger.error("media store: S3 refused limner's credentials for bucket %s (%s)", self.bucket, code)
                raise LimnerError(
                    f"the media store refused limner's credentials and could not {action} the image"
                ) from exc
            logger.error("media store: S3 %s failed on bucket %s: %s", action, self.bucket, code)
            raise LimnerError(f"the media store could not {action} the image") from exc
        except botocore.exceptions.BotoCoreError as exc:  # connection refused, timeouts, no credentials
            logger.error("media store: S3 %s failed on bucket %s: %s", action, self.bucket, exc)
            raise LimnerError(f"the media store could not {action} the image") from exc


class _Missing(Exception):
    """An object that is not there (turned into ``NotFound`` by the caller that knows the key)."""


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
