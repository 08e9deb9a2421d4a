"""Errors in OpenAI's shape: what the ``openai`` SDKs turn into their exceptions.

The SDKs pick the exception class from the HTTP status and show ``message``;
``type`` and ``code`` follow what OpenAI's own API sends where it has an
equivalent (``invalid_request_error``, ``invalid_api_key``,
``model_not_found``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

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

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


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
