"""Images in chat requests, checked before any engine sees them.

A chat message's content may hold ``{"type": "image_url", "image_url":
{"url": …}}`` parts, as in OpenAI's API. For each one the gateway:

- refuses it (400) when the model is not a vision model, rather than let a
  text model fail on it or, worse, silently drop it;
- decodes a ``data:`` URI and checks it: valid base64, at most
  ``max_bytes``, a PNG, JPEG, WebP or GIF by its own bytes (not by what the
  URI claims), whose header Pillow can read, at most ``max_pixels``;
- fetches an ``https://`` URL itself (``fetch.ImageFetcher``: no private
  addresses, limits on size and time), checks the bytes the same way, and
  puts a data URI in the URL's place, so the engine never opens a URL.

A request without images is not touched. A request with them is re-encoded
only when a URL was replaced. ``video_url`` and ``audio_url`` parts (vLLM's
extensions) are accepted as data URIs only, since the engine would fetch a
URL itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from PIL import Image, UnidentifiedImageError

from corral.server.gateway.errors import GatewayError, bad_request
from corral.server.gateway.fetch import FetchError, ImageFetcher

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
"""Pillow's format names of the images accepted, and their MIME types."""
_ENGINE_FETCHED = ("video_url", "audio_url")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 8192 * 4096
    max_images: int = 16
    """Images in one request."""


_INLINE_BYTES = 256 * 1024
"""Smaller images are checked on the event loop; larger ones in a thread."""


@dataclass
class _Part:
    where: str
    """The part's JSON path, for error messages: ``messages[0].content[1]``."""
    part: dict[str, Any]

    @property
    def url(self) -> str:
        value = self.part["image_url"]
        return value if isinstance(value, str) else str(value["url"])

    def replace(self, url: str) -> None:
        value = self.part["image_url"]
        if isinstance(value, str):
            self.part["image_url"] = url
        else:
            value["url"] = url


def _parts(request: dict[str, Any]) -> Iterator[_Part]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            where = f"messages[{i}].content[{j}]"
            if kind in _ENGINE_FETCHED:
                _data_only(part.get(kind), where, str(kind))
            if kind != "image_url":
                continue
            value = part.get("image_url")
            # vLLM and llama.cpp accept a bare string as well as {"url": …}.
            if not isinstance(value, str) and not (
                isinstance(value, dict) and isinstance(value.get("url"), str)
            ):
                raise invalid_image(f"{where}: image_url must be an object with a url", where)
            yield _Part(where, part)


def _data_only(value: object, where: str, kind: str) -> None:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.startswith("data:"):
        raise bad_request(
            f"{where}: a {kind} part must carry its data as a data: URI; "
            "the gateway does not let engines fetch URLs",
            "unsupported_url",
            param=where,
        )


def invalid_image(message: str, where: str, code: str = "invalid_image") -> GatewayError:
    return bad_request(message, code, param=where)


def check_image(data: bytes, limits: ImageLimits, where: str) -> str:
    """The image's MIME type, if it is one the engines may be given; else a 400."""
    if len(data) > limits.max_bytes:
        raise invalid_image(
            f"{where}: the image is {len(data)} bytes, over the limit of {limits.max_bytes}",
            where,
            "image_too_large",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the accepted formats' readers are tried: less of Pillow
            # sees untrusted bytes, and anything else reads as "not an image".
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                kind = image.format or ""
                width, height = image.size
                image.verify()
    except UnidentifiedImageError:
        raise invalid_image(
            f"{where}: the data is not an image of a supported type "
            f"({', '.join(sorted(FORMATS.values()))})",
            where,
            "unsupported_image_type",
        ) from None
    except Image.DecompressionBombWarning:
        raise invalid_image(
            f"{where}: the image has too many pixels", where, "image_too_large"
        ) from None
    except Exception as e:  # Pillow raises many kinds for a damaged file
        raise invalid_image(f"{where}: the image is damaged ({e})", where) from None
    if width * height > limits.max_pixels:
        raise invalid_image(
            f"{where}: the image is {width}x{height} pixels, over the limit of "
            f"{limits.max_pixels} pixels",
            where,
            "image_too_large",
        )
    return FORMATS[kind]


def decode_data_uri(url: str, limits: ImageLimits, where: str) -> bytes:
    head, comma, payload = url.partition(",")
    if not comma:
        raise invalid_image(f"{where}: the data URI has no comma before its data", where)
    media = head.removeprefix("data:").split(";")
    if media[0] and not media[0].lower().startswith("image/"):
        raise invalid_image(
            f"{where}: the data URI declares {media[0]}, not an image",
            where,
            "unsupported_image_type",
        )
    if "base64" not in (m.lower() for m in media[1:]):
        raise invalid_image(f"{where}: an image data URI must be base64 (…;base64,…)", where)
    # base64 is 4 characters per 3 bytes: refuse what is too large before decoding it.
    if len(payload) // 4 * 3 > limits.max_bytes + 3:
        raise invalid_image(
            f"{where}: the image is about {len(payload) // 4 * 3} bytes, over the limit of "
            f"{limits.max_bytes}",
            where,
            "image_too_large",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise invalid_image(f"{where}: the image's base64 data is invalid ({e})", where) from None


class Images:
    """The gateway's image checks and fetches."""

    def __init__(self, limits: ImageLimits, fetcher: ImageFetcher | None) -> None:
        self.limits = limits
        self.fetcher = fetcher
        """None: image URLs are refused (fetching is switched off)."""

    async def prepare(
        self, request: dict[str, Any], body: bytes, *, model: str, vision: bool
    ) -> bytes:
        """The body to send on: ``body`` itself, or re-encoded with fetched
        images as data URIs. Raises a 400 ``GatewayError`` for any bad image."""
        parts = list(_parts(request))
        if not parts:
            return body
        if not vision:
            raise bad_request(
                f"The model {model!r} does not accept images (it is not a vision model); "
                "send text only, or use a model whose categories include 'vision'.",
                "model_not_vision",
                param=parts[0].where,
            )
        if len(parts) > self.limits.max_images:
            raise invalid_image(
                f"the request has {len(parts)} images; at most {self.limits.max_images} "
                "are accepted",
                parts[self.limits.max_images].where,
                "too_many_images",
            )
        fetched = []
        for part in parts:
            url = part.url
            if url.startswith("data:"):
                if len(url) < _INLINE_BYTES:
                    self._check_data_uri(url, part.where)
                else:
                    await asyncio.to_thread(self._check_data_uri, url, part.where)
            elif url.lower().startswith(("https://", "http://")):
                fetched.append(part)
            else:
                raise invalid_image(
                    f"{part.where}: an image URL must be https:// or a data: URI",
                    part.where,
                    "invalid_image_url",
                )
        if not fetched:
            return body
        await asyncio.gather(*(self._fetch(part) for part in fetched))
        return orjson.dumps(request)

    def _check_data_uri(self, url: str, where: str) -> None:
        check_image(decode_data_uri(url, self.limits, where), self.limits, where)

    async def _fetch(self, part: _Part) -> None:
        url = part.url
        if self.fetcher is None:
            raise invalid_image(
                f"{part.where}: image URLs are not fetched by this server; "
                "send the image as a data: URI",
                part.where,
                "invalid_image_url",
            )
        try:
            data, _ = await self.fetcher.fetch(url)
        except FetchError as e:
            raise invalid_image(
                f"{part.where}: cannot fetch {_shorten(url)}: {e}", part.where, "invalid_image_url"
            ) from None
        mime = await asyncio.to_thread(check_image, data, self.limits, part.where)
        part.replace(f"data:{mime};base64,{base64.b64encode(data).decode()}")


def _shorten(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "…"
