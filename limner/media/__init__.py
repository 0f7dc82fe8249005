"""Media: where images are stored, how their URLs are signed, and how images come in and go out.

- ``store``: ``MediaStore`` (write-once, content-addressed, owned) and ``LocalMediaStore``.
- ``signing``: ``UrlSigner`` for expiring HMAC-signed ``/media/{key}`` URLs.
- ``encode``: pixels → PNG/JPEG/WebP bytes.
- ``inputs`` / ``fetch``: client-supplied images → ``SourceImage`` (decoding limits, SSRF-safe fetching).
"""

from limner.media.encode import FORMAT_BY_MIME, MIME_BY_FORMAT, encode_image, read_png_text
from limner.media.fetch import ImageFetcher
from limner.media.inputs import ImageDecoder, ImageLoader, decode_base64, parse_data_url
from limner.media.signing import UrlSigner, load_or_create_secret
from limner.media.store import LocalMediaStore, MediaStore, content_key, is_valid_key

__all__ = [
    "FORMAT_BY_MIME",
    "MIME_BY_FORMAT",
    "ImageDecoder",
    "ImageFetcher",
    "ImageLoader",
    "LocalMediaStore",
    "MediaStore",
    "UrlSigner",
    "content_key",
    "decode_base64",
    "encode_image",
    "is_valid_key",
    "load_or_create_secret",
    "parse_data_url",
    "read_png_text",
]
