"""Errors in OpenAI's shape: what the ``openai`` SDKs turn into their exceptions.

The SDKs pick the exception class from the HTTP status and show ``message``;
``type`` and ``code`` follow what OpenAI's own API sends where it has an
equivalent (``invalid_request_error``, ``invalid_api_key``,
``model_not_found``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

RETRY_AFTER_S = 5
"""What a client is told to wait when a model has no running instance yet."""


class GatewayError(Exception):
    """One error response of the gateway, raised wherever it is found."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


def unauthenticated(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, type="invalid_request_error", code="permission_denied")


def bad_request(message: str, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, type="invalid_request_error", code=code, param=param)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model {model!r} does not exist.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def model_not_running(model: str) -> GatewayError:
    return GatewayError(
        503,
        f"The model {model!r} has no running instance yet; try again shortly.",
        type="server_error",
        code="model_not_running",
        param="model",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def upstream_unavailable(model: str, reason: str) -> GatewayError:
    return GatewayError(
        502,
        f"No instance of the model {model!r} answered: {reason}",
        type="server_error",
        code="upstream_unavailable",
    )


def internal_error() -> GatewayError:
    return GatewayError(
        500,
        "Internal server error; see the server log.",
        type="server_error",
        code="internal_error",
    )


def payload_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than the gateway's limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )


def unknown_url(method: str, path: str) -> GatewayError:
    return GatewayError(
        404,
        f"Invalid URL ({method} {path}).",
        type="invalid_request_error",
        code="unknown_url",
    )


def method_not_allowed(method: str, path: str, allowed: str) -> GatewayError:
    return GatewayError(
        405,
        f"{method} is not allowed on {path}; use {allowed}.",
        type="invalid_request_error",
        code="method_not_allowed",
        headers={"Allow": allowed},
    )
