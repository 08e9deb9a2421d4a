"""A ``ByteSource`` over HTTP range requests: read a file's header without
downloading the file.

Redirects are followed once and the final URL reused (Hugging Face sends
``resolve`` URLs to a CDN); credentials are dropped on a redirect to another
host (httpx does so). A server that ignores ``Range`` gets an error rather
than a full download.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx

from corral.errors import CorralError

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RemoteFileError(CorralError):
    """A remote model file could not be read (not found, no range support, network)."""

    code = "remote_file_error"


class HttpRangeSource:
    """Byte ranges of one remote file; counts what it fetched."""

    def __init__(self, url: str, client: httpx.Client, *, token: str | None = None) -> None:
        self.url = url
        self.name = urlsplit(url).path.rsplit("/", 1)[-1] or url
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._resolved: str | None = None
        self._size: int | None = None
        self.bytes_fetched = 0
        self.requests = 0

    def size(self) -> int | None:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0 or (self._size is not None and offset >= self._size):
            return b""
        headers = {**self._headers, "Range": f"bytes={offset}-{offset + length - 1}"}
        url = self._resolved or self.url
        try:
            with self._client.stream("GET", url, headers=headers, follow_redirects=True) as r:
                if r.status_code == 416:
                    return b""
                if r.status_code == 200:
                    raise RemoteFileError(
                        f"{self.url}: the server ignores range requests; "
                        "corral will not download the whole file to read its header"
                    )
                if r.status_code != 206:
                    raise RemoteFileError(f"{self.url}: HTTP {r.status_code}")
                self._resolved = str(r.url)
                self._note_size(r.headers.get("content-range", ""))
                data = b""
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) >= length:
                        break
        except httpx.HTTPError as e:
            raise RemoteFileError(f"{self.url}: {e}") from e
        self.requests += 1
        self.bytes_fetched += len(data)
        return data[:length]

    def _note_size(self, content_range: str) -> None:
        match = _CONTENT_RANGE.match(content_range)
        if match and match.group(3) != "*":
            self._size = int(match.group(3))
