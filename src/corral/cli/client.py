"""The CLI's HTTP client: one place that knows how to call the server and
turn its error shape into a one-line message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from corral.cli.profile import Profile, load_profile


class CliError(Exception):
    """A failure to report as one line on stderr; the command exits 1
    (``corral.entrypoint.main`` does the reporting)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Client:
    def __init__(self, profile: Profile | None = None, *, api_key: str | None = None) -> None:
        self.profile = profile or load_profile()
        self.base_url = self.profile.server_url.rstrip("/")
        token = api_key or self.profile.api_key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise CliError(f"cannot reach the corral server at {self.base_url}: {e}") from e
        if response.status_code >= 400:
            raise CliError(_error_message(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def stream_text(self, path: str, **params: Any) -> Iterator[bytes]:
        """A streamed answer's bytes as they arrive (logs with --follow)."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(
                "GET", path, params=query, timeout=httpx.Timeout(30, read=None)
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise CliError(_error_message(r), r.status_code)
                yield from r.iter_raw()
        except httpx.HTTPError as e:
            raise CliError(f"cannot reach the corral server at {self.base_url}: {e}") from e

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, *, token: str | None = None) -> Any:
        return self.request("POST", path, json=body, token=token)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)


def find_model(client: Client, name: str) -> dict[str, Any]:
    found = client.get("/api/v1/models", name=name)["items"]
    if not found:
        raise CliError(f"no model named {name!r}")
    model: dict[str, Any] = found[0]
    return model


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        message = f"{error['message']} ({response.status_code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code == 401:
        message += "; run `corral login`"
    return message
